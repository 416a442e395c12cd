//! The y-websocket wire format (y-protocols): sync, awareness, auth and query-awareness messages,
//! framed with lib0 varints.
//!
//! Decoding never panics and never allocates more than the input's size: every length is checked
//! against the bytes that are left before anything is sliced. Payloads are zero-copy `Bytes`
//! slices of the frame they came in.

use bytes::{BufMut, Bytes, BytesMut};

/// Top-level message types.
pub const MSG_SYNC: u64 = 0;
pub const MSG_AWARENESS: u64 = 1;
pub const MSG_AUTH: u64 = 2;
pub const MSG_QUERY_AWARENESS: u64 = 3;

/// Auth sub-types: y-protocols defines "permission denied" (server to client, with a reason);
/// wiredb adds "token" (client to server, a signed access token as the reason string).
pub const AUTH_PERMISSION_DENIED: u64 = 0;
pub const AUTH_TOKEN: u64 = 1;

/// Sync sub-types.
pub const SYNC_STEP1: u64 = 0;
pub const SYNC_STEP2: u64 = 1;
pub const SYNC_UPDATE: u64 = 2;

/// An encoded empty state vector and an encoded empty update (what yrs and Yjs produce).
pub const EMPTY_STATE_VECTOR: &[u8] = &[0];
pub const EMPTY_UPDATE: &[u8] = &[0, 0];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message truncated: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("varint longer than 64 bits at offset {offset}")]
    VarintOverflow { offset: usize },
    #[error("unknown sync message type {0}")]
    UnknownSyncType(u64),
    #[error("empty frame")]
    Empty,
}

/// One y-protocols message. A WebSocket frame may hold several, back to back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Sync step 1: the sender's encoded state vector.
    SyncStep1(Bytes),
    /// Sync step 2: the v1 update answering a step 1.
    SyncStep2(Bytes),
    /// A v1 update.
    Update(Bytes),
    /// An encoded awareness update (clients, clocks, JSON states).
    Awareness(Bytes),
    /// Auth: 0 = permission denied (with a reason); other sub-types are carried as-is.
    Auth { kind: u64, reason: Bytes },
    /// A request for the full awareness state.
    QueryAwareness,
    /// A message type this implementation does not know; ignored by receivers. The rest of
    /// the frame cannot be parsed past it, so it ends the frame.
    Unknown(u64),
}

/// Reads lib0 varints and var-length buffers from a byte slice, never past its end.
pub struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn read_varuint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let byte = *self.buf.get(self.pos).ok_or(DecodeError::Truncated {
                offset: self.pos,
                needed: 1,
            })?;
            self.pos += 1;
            if shift >= 64 || (shift == 63 && byte & 0x7e != 0) {
                return Err(DecodeError::VarintOverflow { offset: start });
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
        }
    }

    /// A lib0 var-length buffer: a varuint length, then that many bytes (zero-copy).
    pub fn read_buf(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.read_varuint()?;
        let left = self.buf.len() - self.pos;
        if len > left as u64 {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: usize::try_from(len).unwrap_or(usize::MAX) - left,
            });
        }
        let len = len as usize;
        let out = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(out)
    }
}

/// The messages of a frame, decoded one at a time: a frame of a million one-byte messages
/// costs one `Message` at a time, not a vector 48 times its size. An error ends the iteration,
/// as does an unknown top-level type (its layout is unknown; it is yielded so the caller can
/// ignore it).
pub fn messages(frame: &Bytes) -> Messages<'_> {
    Messages {
        reader: Reader::new(frame),
        done: false,
    }
}

/// Iterator of [`messages`].
pub struct Messages<'a> {
    reader: Reader<'a>,
    done: bool,
}

impl Iterator for Messages<'_> {
    type Item = Result<Message, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.reader.is_empty() {
            return None;
        }
        let message = decode_message(&mut self.reader);
        self.done = matches!(message, Err(_) | Ok(Message::Unknown(_)));
        Some(message)
    }
}

/// Decodes every message of a frame into a vector: for frames this process encoded itself
/// (tests, the load generator). Untrusted frames go through [`messages`].
pub fn decode_frame(frame: &Bytes) -> Result<Vec<Message>, DecodeError> {
    if frame.is_empty() {
        return Err(DecodeError::Empty);
    }
    messages(frame).collect()
}

fn decode_message(reader: &mut Reader<'_>) -> Result<Message, DecodeError> {
    Ok(match reader.read_varuint()? {
        MSG_SYNC => match reader.read_varuint()? {
            SYNC_STEP1 => Message::SyncStep1(reader.read_buf()?),
            SYNC_STEP2 => Message::SyncStep2(reader.read_buf()?),
            SYNC_UPDATE => Message::Update(reader.read_buf()?),
            other => return Err(DecodeError::UnknownSyncType(other)),
        },
        MSG_AWARENESS => Message::Awareness(reader.read_buf()?),
        MSG_AUTH => {
            let kind = reader.read_varuint()?;
            Message::Auth {
                kind,
                reason: reader.read_buf()?,
            }
        }
        MSG_QUERY_AWARENESS => Message::QueryAwareness,
        other => Message::Unknown(other),
    })
}

/// Appends a lib0 varuint (to a frame, a file record, anything that takes bytes).
pub fn write_varuint(out: &mut impl BufMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

pub fn write_buf(out: &mut BytesMut, data: &[u8]) {
    write_varuint(out, data.len() as u64);
    out.put_slice(data);
}

/// The bytes `write_varuint` takes for `value`.
pub fn varuint_len(value: u64) -> usize {
    (64 - value.max(1).leading_zeros() as usize).div_ceil(7)
}

fn encode_with(kind: u64, sub: Option<u64>, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(2 + varuint_len(payload.len() as u64) + payload.len());
    write_varuint(&mut out, kind);
    if let Some(sub) = sub {
        write_varuint(&mut out, sub);
    }
    write_buf(&mut out, payload);
    out.freeze()
}

impl Message {
    /// Encodes the message as one frame.
    pub fn encode(&self) -> Bytes {
        match self {
            Message::SyncStep1(sv) => encode_with(MSG_SYNC, Some(SYNC_STEP1), sv),
            Message::SyncStep2(update) => encode_with(MSG_SYNC, Some(SYNC_STEP2), update),
            Message::Update(update) => encode_with(MSG_SYNC, Some(SYNC_UPDATE), update),
            Message::Awareness(update) => encode_with(MSG_AWARENESS, None, update),
            Message::Auth { kind, reason } => encode_with(MSG_AUTH, Some(*kind), reason),
            Message::QueryAwareness => Bytes::from_static(&[MSG_QUERY_AWARENESS as u8]),
            Message::Unknown(kind) => {
                let mut out = BytesMut::new();
                write_varuint(&mut out, *kind);
                out.freeze()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(message: Message) {
        let frame = message.encode();
        assert_eq!(decode_frame(&frame).unwrap(), vec![message]);
    }

    #[test]
    fn every_message_kind_round_trips() {
        roundtrip(Message::SyncStep1(Bytes::from_static(&[0])));
        roundtrip(Message::SyncStep2(Bytes::from_static(&[0, 0])));
        roundtrip(Message::Update(Bytes::from(vec![7u8; 300])));
        roundtrip(Message::Awareness(Bytes::from_static(b"\x01\x02\x03")));
        roundtrip(Message::Auth {
            kind: 0,
            reason: Bytes::from_static(b"denied"),
        });
        roundtrip(Message::QueryAwareness);
    }

    #[test]
    fn encoding_matches_y_protocols_bytes() {
        // What y-protocols' writeUpdate produces for a 2-byte update.
        assert_eq!(
            &Message::Update(Bytes::from_static(&[0, 0])).encode()[..],
            &[0, 2, 2, 0, 0]
        );
        assert_eq!(
            &Message::SyncStep1(Bytes::from_static(&[0])).encode()[..],
            &[0, 0, 1, 0]
        );
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for value in [0, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut out = BytesMut::new();
            write_varuint(&mut out, value);
            assert_eq!(out.len(), varuint_len(value));
            let frozen = out.freeze();
            let mut reader = Reader::new(&frozen);
            assert_eq!(reader.read_varuint().unwrap(), value);
            assert!(reader.is_empty());
        }
    }

    #[test]
    fn a_frame_may_hold_several_messages() {
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&Message::SyncStep1(Bytes::from_static(&[0])).encode());
        frame.extend_from_slice(&Message::Update(Bytes::from_static(&[0, 0])).encode());
        frame.extend_from_slice(&Message::QueryAwareness.encode());
        let messages = decode_frame(&frame.freeze()).unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[2], Message::QueryAwareness);
    }

    #[test]
    fn unknown_types_are_reported_not_fatal() {
        let frame = Bytes::from_static(&[9, 1, 2, 3]);
        assert_eq!(decode_frame(&frame).unwrap(), vec![Message::Unknown(9)]);
    }

    #[test]
    fn malformed_input_is_an_error_value() {
        let cases: &[&[u8]] = &[
            &[],
            &[0],
            &[0, 2],
            &[0, 2, 5, 1],
            &[0, 7, 0],
            &[0, 0, 0x80, 0x80, 0x80, 0x80, 0x01],
            &[0xff; 12],
            &[
                1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ];
        for case in cases {
            let frame = Bytes::copy_from_slice(case);
            assert!(decode_frame(&frame).is_err(), "{case:?} should not decode");
        }
    }

    #[test]
    fn every_truncation_of_a_valid_frame_is_an_error() {
        let frame = Message::Update(Bytes::from(vec![1u8; 200])).encode();
        for cut in 0..frame.len() {
            assert!(decode_frame(&frame.slice(..cut)).is_err(), "cut at {cut}");
        }
    }
}
