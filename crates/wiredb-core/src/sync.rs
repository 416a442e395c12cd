//! The local side of the sync protocol, sans I/O: turns the frames a local document received
//! into one batch to apply. All pending document updates are merged into a single update, so
//! the document (a `pycrdt.Doc` in Python) applies once however many arrived.

use bytes::Bytes;

use crate::guard::{self, GuardLimits};
use crate::protocol::{decode_frame, Message};

#[derive(Debug, Default)]
pub struct Batch {
    /// Updates to apply: one merged update, or several if they could not be merged.
    pub updates: Vec<Bytes>,
    /// State vectors of sync step 1 requests, each to answer with a step 2.
    pub step1: Vec<Bytes>,
    /// A sync step 2 arrived: once applied, the document is synchronized.
    pub synced: bool,
    /// How many sync step 2s arrived (a peer answers each step 1 with one, in order).
    pub step2: usize,
    /// Awareness updates, in order.
    pub awareness: Vec<Bytes>,
    /// The peer asked for our awareness states (y-protocols query-awareness).
    pub query_awareness: bool,
    /// The peer refused permission (y-protocols auth), with its reason.
    pub denied: Option<String>,
    /// Frames that could not be decoded, described (they are skipped).
    pub errors: Vec<String>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty()
            && self.step1.is_empty()
            && !self.synced
            && self.awareness.is_empty()
            && !self.query_awareness
            && self.denied.is_none()
            && self.errors.is_empty()
    }
}

pub fn absorb(frames: &[Bytes], limits: &GuardLimits) -> Batch {
    let mut batch = Batch::default();
    let mut updates = Vec::new();
    for frame in frames {
        let messages = match decode_frame(frame) {
            Ok(messages) => messages,
            Err(error) => {
                batch.errors.push(error.to_string());
                continue;
            }
        };
        for message in messages {
            match message {
                Message::SyncStep1(sv) => batch.step1.push(sv),
                Message::SyncStep2(update) => {
                    batch.synced = true;
                    batch.step2 += 1;
                    updates.push(update);
                }
                Message::Update(update) => updates.push(update),
                Message::Awareness(payload) => batch.awareness.push(payload),
                Message::Auth { kind: 0, reason } => {
                    batch.denied = Some(String::from_utf8_lossy(&reason).into_owned());
                }
                Message::QueryAwareness => batch.query_awareness = true,
                // Other auth sub-types are not defined by y-protocols; unknown types are
                // ignored (y-protocols' rule), as is the rest of their frame.
                Message::Auth { .. } | Message::Unknown(_) => {}
            }
        }
    }
    updates.retain(|u| u.as_ref() != crate::protocol::EMPTY_UPDATE);
    batch.updates = match updates.len() {
        0 | 1 => updates,
        _ => match guard::merge_updates(&updates, limits) {
            Ok(merged) => vec![merged.into()],
            Err(error) => {
                tracing::debug!(%error, "updates could not be merged; applying them one by one");
                updates
            }
        },
    };
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Doc, GetString, Text, Transact};

    fn edit(doc: &Doc, text: &str) -> Bytes {
        let t = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        let len = t.len(&txn);
        t.insert(&mut txn, len, text);
        txn.encode_update_v1().into()
    }

    #[test]
    fn pending_updates_become_one() {
        let source = Doc::new();
        let frames: Vec<Bytes> = ["a", "b", "c"]
            .iter()
            .map(|s| Message::Update(edit(&source, s)).encode())
            .collect();
        let batch = absorb(&frames, &GuardLimits::default());
        assert_eq!(batch.updates.len(), 1);
        assert!(!batch.synced);
        let target = Doc::new();
        let t = target.get_or_insert_text("t");
        guard::apply_update(&target, &batch.updates[0], &GuardLimits::default()).unwrap();
        assert_eq!(t.get_string(&target.transact()), "abc");
    }

    #[test]
    fn step1_step2_denial_and_garbage_are_sorted_out() {
        let frames = vec![
            Message::SyncStep1(Bytes::from_static(&[0])).encode(),
            Message::SyncStep2(Bytes::from_static(&[0, 0])).encode(),
            Message::Auth {
                kind: 0,
                reason: Bytes::from_static(b"read-only"),
            }
            .encode(),
            Bytes::from_static(&[0, 9]),
            Message::QueryAwareness.encode(),
        ];
        let batch = absorb(&frames, &GuardLimits::default());
        assert_eq!(batch.step1.len(), 1);
        assert!(batch.synced);
        assert_eq!(batch.step2, 1);
        assert!(batch.updates.is_empty());
        assert_eq!(batch.denied.as_deref(), Some("read-only"));
        assert_eq!(batch.errors.len(), 1);
        assert!(batch.query_awareness);
    }

    #[test]
    fn a_frame_of_several_messages_is_read_whole_up_to_an_unknown_type() {
        let source = Doc::new();
        let mut frame = Message::SyncStep1(Bytes::from_static(&[0]))
            .encode()
            .to_vec();
        frame.extend_from_slice(&Message::Update(edit(&source, "a")).encode());
        frame.extend_from_slice(&Message::Awareness(Bytes::from_static(&[0])).encode());
        frame.extend_from_slice(&[42, 1, 2, 3]);
        let batch = absorb(&[Bytes::from(frame)], &GuardLimits::default());
        assert_eq!(batch.step1.len(), 1);
        assert_eq!(batch.updates.len(), 1);
        assert_eq!(batch.awareness.len(), 1);
        assert!(batch.errors.is_empty());
    }
}
