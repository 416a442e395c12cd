//! A room's awareness table (cursors, user names): for each Yjs client id, its clock, its JSON
//! state and the member (connection) that owns it.
//!
//! Kept apart from yrs' `Awareness`, which is tied to a local document and its own client id: a
//! room only relays the states of others, and must know which connection each id belongs to so
//! that a leaver's states are removed, and only the leaver's.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use crate::protocol::{write_buf, write_varuint, DecodeError, Reader};

pub type MemberId = u64;

const NULL_STATE: &[u8] = b"null";

#[derive(Debug, Clone)]
struct Entry {
    clock: u64,
    state: Bytes,
    owner: MemberId,
}

#[derive(Debug, Default)]
pub struct AwarenessTable {
    entries: HashMap<u64, Entry>,
}

/// One decoded entry of an awareness update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwarenessEntry {
    pub client: u64,
    pub clock: u64,
    pub state: Bytes,
}

/// Decodes an awareness update: a count, then (client id, clock, JSON state string) per entry.
pub fn decode_update(payload: &Bytes) -> Result<Vec<AwarenessEntry>, DecodeError> {
    let mut reader = Reader::new(payload);
    let count = reader.read_varuint()?;
    // Each entry takes at least 3 bytes: a declared count beyond that is a lie, not a reason
    // to allocate.
    let mut entries = Vec::with_capacity((count as usize).min(payload.len() / 3));
    for _ in 0..count {
        let client = reader.read_varuint()?;
        let clock = reader.read_varuint()?;
        let state = reader.read_buf()?;
        entries.push(AwarenessEntry {
            client,
            clock,
            state,
        });
    }
    Ok(entries)
}

pub fn encode_update<'a>(entries: impl IntoIterator<Item = (u64, u64, &'a [u8])>) -> Bytes {
    let entries: Vec<_> = entries.into_iter().collect();
    let mut out = BytesMut::new();
    write_varuint(&mut out, entries.len() as u64);
    for (client, clock, state) in entries {
        write_varuint(&mut out, client);
        write_varuint(&mut out, clock);
        write_buf(&mut out, state);
    }
    out.freeze()
}

impl AwarenessTable {
    /// Applies an update from `member`; returns the accepted entries re-encoded (to relay), or
    /// None when nothing changed. An id already owned by another live member is not accepted,
    /// nor is a state larger than `max_state_bytes`.
    pub fn apply(
        &mut self,
        member: MemberId,
        payload: &Bytes,
        max_state_bytes: usize,
    ) -> Result<Option<Bytes>, DecodeError> {
        let mut accepted = Vec::new();
        for entry in decode_update(payload)? {
            if entry.state.len() > max_state_bytes {
                continue;
            }
            let is_null = entry.state.as_ref() == NULL_STATE;
            let take = match self.entries.get(&entry.client) {
                None => true,
                Some(current) if current.owner != member && current.state != NULL_STATE => false,
                Some(current) => {
                    entry.clock > current.clock
                        || (entry.clock == current.clock && is_null && current.state != NULL_STATE)
                }
            };
            if take {
                self.entries.insert(
                    entry.client,
                    Entry {
                        clock: entry.clock,
                        state: entry.state.clone(),
                        owner: member,
                    },
                );
                accepted.push(entry);
            }
        }
        if accepted.is_empty() {
            return Ok(None);
        }
        Ok(Some(encode_update(
            accepted
                .iter()
                .map(|e| (e.client, e.clock, e.state.as_ref())),
        )))
    }

    /// Every live (non-null) state, for a joiner or a query; None when there are none.
    pub fn snapshot(&self) -> Option<Bytes> {
        let live: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| e.state != NULL_STATE)
            .map(|(client, e)| (*client, e.clock, e.state.as_ref()))
            .collect();
        if live.is_empty() {
            None
        } else {
            Some(encode_update(live))
        }
    }

    /// Removes the states owned by a leaving member; returns the removal to broadcast.
    pub fn remove_member(&mut self, member: MemberId) -> Option<Bytes> {
        let mut removed = Vec::new();
        self.entries.retain(|client, entry| {
            if entry.owner != member {
                return true;
            }
            // Removed at the same clock, as y-protocols' server does: peers take a null state
            // at an equal clock as a removal, and the client's next renewal (clock + 1) is
            // then accepted again, should it come back on another connection.
            if entry.state != NULL_STATE {
                removed.push((*client, entry.clock));
            }
            false
        });
        if removed.is_empty() {
            None
        } else {
            Some(encode_update(
                removed
                    .into_iter()
                    .map(|(client, clock)| (client, clock, NULL_STATE)),
            ))
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(entries: &[(u64, u64, &str)]) -> Bytes {
        encode_update(entries.iter().map(|(c, k, s)| (*c, *k, s.as_bytes())))
    }

    #[test]
    fn newer_clocks_win_and_are_relayed() {
        let mut table = AwarenessTable::default();
        let relay = table
            .apply(1, &update(&[(10, 1, "{\"a\":1}")]), 1 << 16)
            .unwrap();
        assert_eq!(relay, Some(update(&[(10, 1, "{\"a\":1}")])));
        assert_eq!(
            table
                .apply(1, &update(&[(10, 1, "{\"a\":2}")]), 1 << 16)
                .unwrap(),
            None
        );
        assert!(table
            .apply(1, &update(&[(10, 2, "{\"a\":2}")]), 1 << 16)
            .unwrap()
            .is_some());
    }

    #[test]
    fn another_member_cannot_overwrite_or_remove_a_state() {
        let mut table = AwarenessTable::default();
        table.apply(1, &update(&[(10, 1, "{}")]), 1 << 16).unwrap();
        assert_eq!(
            table
                .apply(2, &update(&[(10, 5, "null")]), 1 << 16)
                .unwrap(),
            None
        );
        assert!(table.snapshot().is_some());
    }

    #[test]
    fn a_leaver_s_states_are_removed_at_their_clock() {
        let mut table = AwarenessTable::default();
        table.apply(1, &update(&[(10, 3, "{}")]), 1 << 16).unwrap();
        table.apply(2, &update(&[(20, 1, "{}")]), 1 << 16).unwrap();
        assert_eq!(table.remove_member(1), Some(update(&[(10, 3, "null")])));
        assert_eq!(table.snapshot(), Some(update(&[(20, 1, "{}")])));
        assert_eq!(table.remove_member(1), None);
    }

    #[test]
    fn a_lying_count_does_not_allocate() {
        let payload = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode_update(&payload).is_err());
    }
}
