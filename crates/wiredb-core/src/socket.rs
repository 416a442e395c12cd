//! A server connection's socket, split so that a member's writer sends its frames itself.
//!
//! tungstenite reads the socket and parses what the peer sends. Until the member joins its room
//! it also writes (the handshake, a refusal's close frame). Then the write half goes to the
//! member's writer, which frames the room's messages itself: a server's frames are unmasked, so
//! a frame is a 2 to 10 byte header and the payload as the room encoded it, and a batch is one
//! buffer written with one send(2). Going through tungstenite's sink cost a lock, a poll and a
//! copy per frame, a fifth of the server's CPU under load.
//!
//! What tungstenite still writes after that (a pong, the answer to the peer's close) is kept
//! in [`Control`] and sent by the writer between batches: it always writes whole frames.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::budget::Memory;
use crate::queue::CloseReason;

/// Control frames tungstenite may keep for the writer. Pongs beyond it are dropped (RFC 6455
/// lets an endpoint answer only the latest ping); a close frame is always kept.
const MAX_CONTROL_BYTES: usize = 4 << 10;

pub const OPCODE_BINARY: u8 = 0x2;
pub const OPCODE_CLOSE: u8 = 0x8;
pub const OPCODE_PING: u8 = 0x9;
pub const OPCODE_PONG: u8 = 0xA;
const FIN: u8 = 0x80;
const MASKED: u8 = 0x80;

/// What tungstenite wrote once the writer took the write half.
#[derive(Debug)]
pub struct Control {
    frames: Mutex<ControlFrames>,
    wake: Arc<Notify>,
}

#[derive(Debug, Default)]
struct ControlFrames {
    bytes: Vec<u8>,
    /// tungstenite sent a close frame (it answered the peer's): nothing may follow it.
    closed: bool,
}

impl Control {
    fn lock(&self) -> std::sync::MutexGuard<'_, ControlFrames> {
        // Appends and takes only: a panic elsewhere cannot leave it half-updated.
        self.frames.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, bytes: &[u8]) {
        let is_close = holds_close(bytes);
        {
            let mut frames = self.lock();
            if frames.closed {
                return;
            }
            if is_close || frames.bytes.len() + bytes.len() <= MAX_CONTROL_BYTES {
                frames.bytes.extend_from_slice(bytes);
            }
            frames.closed |= is_close;
        }
        self.wake.notify_one();
    }

    /// Takes what tungstenite wrote, and whether a close frame is among it.
    pub fn take(&self) -> (Vec<u8>, bool) {
        let mut frames = self.lock();
        (std::mem::take(&mut frames.bytes), frames.closed)
    }
}

/// Whether whole frames hold a close frame.
fn holds_close(mut bytes: &[u8]) -> bool {
    while let Some(head) = parse_head(bytes) {
        if head.opcode == OPCODE_CLOSE {
            return true;
        }
        let end = head.len.saturating_add(head.payload);
        bytes = bytes.get(end..).unwrap_or_default();
    }
    false
}

enum WriteSide {
    /// Before the member joins: tungstenite writes to the socket.
    Socket(OwnedWriteHalf),
    /// The writer has the socket; tungstenite's writes are kept for it.
    Control(Arc<Control>),
}

/// What a connection may read into a message before the bytes count against the process's
/// [`Memory`]: an idle or chatty connection costs nothing to count, a large message is charged.
const FREE_READ_BYTES: usize = 64 << 10;

/// The stream tungstenite runs on.
pub struct MemberSocket {
    read: OwnedReadHalf,
    write: WriteSide,
    /// Bytes read since the last message was handled (tungstenite holds them).
    unsettled: usize,
    /// What of them is charged to the process.
    charged: usize,
    /// A read was refused: the process's memory limit is reached.
    refused: bool,
    /// What the server read before tungstenite (the request head) and has not handed it yet.
    replay: Bytes,
}

impl MemberSocket {
    /// `replay`: bytes already read from `stream`, read again first.
    pub fn new(stream: TcpStream, replay: Vec<u8>) -> Self {
        let (read, write) = stream.into_split();
        MemberSocket {
            read,
            write: WriteSide::Socket(write),
            unsettled: 0,
            charged: 0,
            refused: false,
            replay: Bytes::from(replay),
        }
    }

    /// The messages read so far are handled: what tungstenite held for them is free.
    pub fn settle(&mut self) {
        // Most messages were never charged: the process's count is left alone for them.
        if self.charged > 0 {
            Memory::process().release(self.charged);
        }
        self.unsettled = 0;
        self.charged = 0;
    }

    /// Whether reading stopped because the process's memory limit is reached.
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// Hands the write half to the member's writer (woken by `wake` when tungstenite writes).
    pub fn take_writer(&mut self, wake: Arc<Notify>) -> Option<(OwnedWriteHalf, Arc<Control>)> {
        let control = Arc::new(Control {
            frames: Mutex::default(),
            wake,
        });
        match std::mem::replace(&mut self.write, WriteSide::Control(control.clone())) {
            WriteSide::Socket(write) => Some((write, control)),
            other => {
                self.write = other;
                None
            }
        }
    }
}

impl AsyncRead for MemberSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.replay.is_empty() {
            let n = buf.remaining().min(self.replay.len());
            buf.put_slice(&self.replay.split_to(n));
            if self.replay.is_empty() {
                // An empty slice still holds the head's allocation.
                self.replay = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.read).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let this = &mut *self;
            this.unsettled += buf.filled().len() - before;
            let owed = this
                .unsettled
                .saturating_sub(FREE_READ_BYTES)
                .saturating_sub(this.charged);
            if owed > 0 {
                if !Memory::process().try_charge(owed) {
                    this.refused = true;
                    return Poll::Ready(Err(io::Error::other(
                        "the server's memory limit is reached",
                    )));
                }
                this.charged += owed;
            }
        }
        polled
    }
}

impl Drop for MemberSocket {
    fn drop(&mut self) {
        self.settle();
    }
}

impl AsyncWrite for MemberSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.write {
            WriteSide::Socket(write) => Pin::new(write).poll_write(cx, buf),
            // tungstenite writes its buffer of whole frames in one call, and this takes it all.
            WriteSide::Control(control) => {
                control.push(buf);
                Poll::Ready(Ok(buf.len()))
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.write {
            WriteSide::Socket(write) => Pin::new(write).poll_flush(cx),
            WriteSide::Control(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.write {
            WriteSide::Socket(write) => Pin::new(write).poll_shutdown(cx),
            // The writer shuts the socket down after its close frame.
            WriteSide::Control(_) => Poll::Ready(Ok(())),
        }
    }
}

/// A frame's header, as read: one codec for the server's writer and the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    pub opcode: u8,
    /// The header's length in bytes.
    pub len: usize,
    /// The payload's length (`usize::MAX` when it does not fit).
    pub payload: usize,
    pub mask: Option<[u8; 4]>,
}

/// The frame header at the start of `buf`, once it is all there.
pub fn parse_head(buf: &[u8]) -> Option<FrameHead> {
    let [first, second, rest @ ..] = buf else {
        return None;
    };
    let (extra, payload) = match second & 0x7f {
        126 => (
            2,
            u64::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?])),
        ),
        127 => {
            let mut len = [0; 8];
            len.copy_from_slice(rest.get(..8)?);
            (8, u64::from_be_bytes(len))
        }
        len => (0, u64::from(len)),
    };
    let mask = if second & MASKED != 0 {
        let key = rest.get(extra..extra + 4)?;
        Some([key[0], key[1], key[2], key[3]])
    } else {
        None
    };
    Some(FrameHead {
        fin: first & FIN != 0,
        opcode: first & 0x0f,
        len: 2 + extra + if mask.is_some() { 4 } else { 0 },
        payload: usize::try_from(payload).unwrap_or(usize::MAX),
        mask,
    })
}

/// Appends a final frame's header: a server's unmasked, a client's with its `mask`.
pub fn write_head(out: &mut Vec<u8>, opcode: u8, payload: usize, mask: Option<[u8; 4]>) {
    out.push(FIN | opcode);
    let masked = if mask.is_some() { MASKED } else { 0 };
    if payload < 126 {
        out.push(masked | payload as u8);
    } else if let Ok(len) = u16::try_from(payload) {
        out.push(masked | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(masked | 127);
        out.extend_from_slice(&(payload as u64).to_be_bytes());
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
}

/// Appends a binary frame holding `payload` as a server sends it (unmasked).
pub fn binary_frame(out: &mut Vec<u8>, payload: &[u8]) {
    write_head(out, OPCODE_BINARY, payload.len(), None);
    out.extend_from_slice(payload);
}

/// Appends an empty ping.
pub fn ping_frame(out: &mut Vec<u8>) {
    write_head(out, OPCODE_PING, 0, None);
}

/// Appends a close frame: the code, then the reason cut to what a control frame holds (125
/// bytes in all), on a character boundary.
pub fn close_frame(out: &mut Vec<u8>, reason: &CloseReason) {
    let mut end = reason.reason.len().min(123);
    while !reason.reason.is_char_boundary(end) {
        end -= 1;
    }
    let text = &reason.reason.as_bytes()[..end];
    write_head(out, OPCODE_CLOSE, 2 + text.len(), None);
    out.extend_from_slice(&reason.code.to_be_bytes());
    out.extend_from_slice(text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

    fn parse(bytes: &[u8]) -> (FrameHeader, Vec<u8>) {
        let mut cursor = io::Cursor::new(bytes);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        let start = cursor.position() as usize;
        assert_eq!(bytes.len() - start, len as usize, "one whole frame");
        (header, bytes[start..].to_vec())
    }

    #[test]
    fn frames_parse_as_tungstenite_reads_them() {
        for size in [0, 1, 125, 126, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let mut out = Vec::new();
            binary_frame(&mut out, &payload);
            let (header, body) = parse(&out);
            assert!(header.is_final && header.mask.is_none());
            assert_eq!(u8::from(header.opcode), OPCODE_BINARY);
            assert_eq!(body, payload);
        }
        let mut out = Vec::new();
        ping_frame(&mut out);
        assert_eq!(out, [0x89, 0]);
    }

    #[test]
    fn a_close_reason_is_cut_to_a_control_frame_on_a_char_boundary() {
        let mut out = Vec::new();
        close_frame(&mut out, &CloseReason::new(1008, "é".repeat(100)));
        let (header, body) = parse(&out);
        assert_eq!(u8::from(header.opcode), OPCODE_CLOSE);
        assert!(body.len() <= 125);
        assert_eq!(u16::from_be_bytes([body[0], body[1]]), 1008);
        assert!(std::str::from_utf8(&body[2..]).is_ok());
    }

    #[test]
    fn control_keeps_a_close_and_nothing_after_it() {
        let control = Control {
            frames: Mutex::default(),
            wake: Arc::new(Notify::new()),
        };
        let pong = vec![0x8a, 0];
        for _ in 0..MAX_CONTROL_BYTES {
            control.push(&pong);
        }
        // A pong and the close in one write, as tungstenite may write them.
        let mut close = pong.clone();
        close_frame(&mut close, &CloseReason::normal());
        control.push(&close);
        control.push(&pong);
        let (bytes, closed) = control.take();
        assert!(closed);
        assert!(bytes.len() <= MAX_CONTROL_BYTES + close.len());
        assert!(bytes.ends_with(&close));
    }
}
