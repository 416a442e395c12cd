//! The plain HTTP side of the server's port. A request that is not a WebSocket upgrade (a
//! browser opening the URL, a health probe, a scanner) gets an HTTP status instead of a dropped
//! connection: the server reads the request head itself, answers those, and hands the others to
//! tungstenite with the bytes it read replayed first.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest request head read (tungstenite takes at most 124 headers).
pub const MAX_HEAD_BYTES: usize = 16 << 10;

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// A WebSocket upgrade: for tungstenite.
    Upgrade,
    /// Anything else HTTP: answered 426.
    Plain,
    /// Not HTTP, or a head too large: answered 400.
    Malformed,
}

/// Reads from `stream` until the end of a request head (or `MAX_HEAD_BYTES`); returns every
/// byte read, or None if the peer closed first.
pub async fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    // Read into the buffer itself: no stack buffer in the opening future, no second copy.
    let mut head = Vec::with_capacity(1024);
    loop {
        if head.len() == head.capacity() {
            head.reserve(1024);
        }
        let searched_from = head.len().saturating_sub(3);
        if stream.read_buf(&mut head).await? == 0 {
            return Ok(None);
        }
        if head[searched_from..].windows(4).any(|w| w == b"\r\n\r\n")
            || head.len() >= MAX_HEAD_BYTES
        {
            return Ok(Some(head));
        }
    }
}

/// Classifies a request head (parsed with httparse).
pub fn classify(head: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Head::Malformed,
    }
    let upgrade = request.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("upgrade")
            && String::from_utf8_lossy(h.value)
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("websocket"))
    });
    if upgrade {
        Head::Upgrade
    } else {
        Head::Plain
    }
}

/// Answers a request that is not an upgrade, and closes.
pub async fn answer(stream: &mut TcpStream, head: &Head) -> io::Result<()> {
    let (status, body) = match head {
        Head::Malformed => ("400 Bad Request", "bad request\n"),
        _ => (
            "426 Upgrade Required",
            "wiredb: this is a WebSocket server (y-websocket protocol); connect with a WebSocket client\n",
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nUpgrade: websocket\r\nConnection: close\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_plain_requests_and_garbage_are_told_apart() {
        let upgrade =
            b"GET /room HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n";
        assert_eq!(classify(upgrade), Head::Upgrade);
        assert_eq!(classify(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Head::Plain);
        assert_eq!(classify(b"POST /x HTTP/1.0\r\n\r\n"), Head::Plain);
        assert_eq!(classify(b"\x16\x03\x01\x02\x00\r\n\r\n"), Head::Malformed);
        assert_eq!(classify(b"GET / HTTP/1.1\r\nHost: x\r\n"), Head::Malformed);
    }
}
