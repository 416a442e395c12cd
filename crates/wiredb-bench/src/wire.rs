//! The client side of RFC 6455, as little of it as the load generator needs: the opening
//! handshake, a frame reader that hands out binary messages, and a writer of masked frames.
//!
//! The load generator parses every delivery, as much work per delivery as a server spends
//! sending it; through tokio-tungstenite (a waker swap, a poll and a buffer split per message)
//! it was the limit of workload 5 before the server was. No extensions are offered, so frames
//! are plain; fragmented messages are put back together.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use wiredb_core::socket::{parse_head, write_head};

const READ_CHUNK: usize = 64 << 10;
/// Largest handshake answer read.
const MAX_RESPONSE: usize = 16 << 10;

pub use wiredb_core::socket::{OPCODE_BINARY, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG};

/// What the reader hands out.
#[derive(Debug)]
pub enum Incoming {
    Binary(Bytes),
    Ping(Bytes),
    Close,
}

pub struct Reader {
    read: OwnedReadHalf,
    parser: Parser,
}

/// What was read and not handed out yet.
struct Parser {
    buf: BytesMut,
    /// A fragmented data message being put back together: its opcode and what arrived.
    partial: Option<(u8, Vec<u8>)>,
}

pub struct Writer {
    write: OwnedWriteHalf,
    rng: u64,
}

/// Opens a WebSocket to `url` (`ws://host:port/path`).
pub async fn connect(url: &str, seed: u64) -> Result<(Reader, Writer), String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("not a ws:// url: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let stream = TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut read, mut write) = stream.into_split();
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    write
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    // The answer, then whatever the server sent right after it (a y-websocket server's step 1).
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > MAX_RESPONSE {
            return Err("handshake answer too long".into());
        }
        if read.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed during the handshake".into());
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.advance(end);
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!(
            "handshake refused: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    let accept = derive_accept_key(key.as_bytes());
    let accepted = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == accept
        })
    });
    if !accepted {
        return Err("handshake answer without the right Sec-WebSocket-Accept".into());
    }
    Ok((
        Reader {
            read,
            parser: Parser { buf, partial: None },
        },
        Writer {
            write,
            rng: seed | 1,
        },
    ))
}

impl Reader {
    /// The next message; `Ok(None)` once the connection ended.
    pub async fn next(&mut self) -> Result<Option<Incoming>, String> {
        loop {
            if let Some(incoming) = self.parser.parse()? {
                return Ok(Some(incoming));
            }
            let buf = &mut self.parser.buf;
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            if self.read.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
                return Ok(None);
            }
        }
    }
}

impl Parser {
    /// Takes one whole message out of the buffer, if there is one.
    fn parse(&mut self) -> Result<Option<Incoming>, String> {
        loop {
            let Some(head) = parse_head(&self.buf) else {
                return Ok(None);
            };
            if head.payload == usize::MAX {
                return Err("frame too large".into());
            }
            if self.buf.len() < head.len + head.payload {
                return Ok(None);
            }
            self.buf.advance(head.len);
            let mut payload = self.buf.split_to(head.payload);
            if let Some(mask) = head.mask {
                for (i, byte) in payload.iter_mut().enumerate() {
                    *byte ^= mask[i % 4];
                }
            }
            let fin = head.fin;
            match head.opcode {
                OPCODE_CLOSE => return Ok(Some(Incoming::Close)),
                OPCODE_PING => return Ok(Some(Incoming::Ping(payload.freeze()))),
                OPCODE_PONG => continue,
                0 => {
                    let Some((opcode, mut data)) = self.partial.take() else {
                        return Err("a continuation frame without a message".into());
                    };
                    data.extend_from_slice(&payload);
                    if !fin {
                        self.partial = Some((opcode, data));
                        continue;
                    }
                    if opcode == OPCODE_BINARY {
                        return Ok(Some(Incoming::Binary(data.into())));
                    }
                }
                opcode if !fin => self.partial = Some((opcode, payload.to_vec())),
                OPCODE_BINARY => return Ok(Some(Incoming::Binary(payload.freeze()))),
                // Text frames are not part of the protocol.
                _ => {}
            }
        }
    }
}

impl Writer {
    fn mask(&mut self) -> [u8; 4] {
        // xorshift64: a fresh key per frame, as RFC 6455 asks of a client.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x as u32).to_be_bytes()
    }

    /// Appends a masked frame to `out`.
    pub fn frame(&mut self, out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
        let mask = self.mask();
        masked_frame(out, opcode, payload, mask);
    }

    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write.write_all(bytes).await
    }
}

fn masked_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    write_head(out, opcode, payload.len(), Some(mask));
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

    #[test]
    fn masked_frames_parse_as_tungstenite_reads_them() {
        for len in [0, 5, 125, 126, 65_535, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            masked_frame(&mut out, OPCODE_BINARY, &payload, [1, 2, 3, 4]);
            let mut cursor = std::io::Cursor::new(&out[..]);
            let (theirs, their_len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(theirs.mask, Some([1, 2, 3, 4]));
            assert_eq!(their_len as usize, len);
            let head = parse_head(&out).unwrap();
            assert_eq!(
                (head.len, head.payload, head.mask),
                (cursor.position() as usize, len, Some([1, 2, 3, 4]))
            );
            let head = head.len;
            let body: Vec<u8> = out[head..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4])
                .collect();
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn fragments_are_put_back_together_and_control_frames_pass_between() {
        // Unmasked server frames: "ab" in two fragments with a ping between, then a close.
        let mut reader_buf = BytesMut::new();
        reader_buf.extend_from_slice(&[OPCODE_BINARY, 1, b'a', 0x80 | OPCODE_PING, 0]);
        reader_buf.extend_from_slice(&[0x80, 1, b'b', 0x80 | OPCODE_CLOSE, 0]);
        let mut reader = Parser {
            buf: reader_buf,
            partial: None,
        };
        assert!(matches!(reader.parse(), Ok(Some(Incoming::Ping(_)))));
        assert!(matches!(reader.parse(), Ok(Some(Incoming::Binary(b))) if &b[..] == b"ab"));
        assert!(matches!(reader.parse(), Ok(Some(Incoming::Close))));
        assert!(matches!(reader.parse(), Ok(None)));
    }
}
