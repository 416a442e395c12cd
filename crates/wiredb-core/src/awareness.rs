//! A room's awareness table (cursors, user names): for each Yjs client id, its clock, its JSON
//! state and the member (connection) that owns it.
//!
//! Kept apart from yrs' `Awareness`, which is tied to a local document and its own client id: a
//! room only relays the states of others, and must know which connection each id belongs to so
//! that a leaver's states are removed, and only the leaver's.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use crate::budget::Memory;
use crate::protocol::{write_buf, write_varuint, DecodeError, Message, Reader};

pub type MemberId = u64;

/// What one connection and one room may hold. A y-websocket client has one client id; a
/// connection that brings many is a relay or an attack, and every id is kept until it leaves.
#[derive(Debug, Clone, Copy)]
pub struct AwarenessLimits {
    /// Largest state (one client's JSON) relayed; larger ones are dropped.
    pub max_state_bytes: usize,
    /// Client ids one member may own.
    pub max_clients_per_member: usize,
    /// Client ids a room holds.
    pub max_clients: usize,
}

impl Default for AwarenessLimits {
    fn default() -> Self {
        AwarenessLimits {
            max_state_bytes: 64 << 10,
            max_clients_per_member: 8,
            max_clients: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwarenessError {
    #[error("malformed awareness update: {0}")]
    Decode(#[from] DecodeError),
    #[error("more than {limit} awareness client ids for one connection")]
    TooManyClients { limit: usize },
    #[error("the room holds {limit} awareness client ids already")]
    RoomFull { limit: usize },
    #[error("the server's memory limit is reached")]
    OverBudget,
}

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
    /// Client ids each member owns.
    owned: HashMap<MemberId, usize>,
    /// Bytes of the states held, charged to the process memory.
    bytes: usize,
    /// The snapshot as a frame, until the table changes: a joiner or a query costs a clone.
    snapshot: Option<Option<Bytes>>,
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
    /// nor is a state larger than the limit. A member past its share of ids, or a room past
    /// its own, is an error: what it sent up to there is applied but not relayed (the member is
    /// closed for it, which removes its ids again).
    pub fn apply(
        &mut self,
        member: MemberId,
        payload: &Bytes,
        limits: &AwarenessLimits,
    ) -> Result<Option<Bytes>, AwarenessError> {
        let mut accepted = Vec::new();
        let mut failed = None;
        for entry in decode_update(payload)? {
            if entry.state.len() > limits.max_state_bytes {
                continue;
            }
            let is_null = entry.state.as_ref() == NULL_STATE;
            let current = self.entries.get(&entry.client);
            let take = match current {
                None => true,
                Some(current) if current.owner != member && current.state != NULL_STATE => false,
                Some(current) => {
                    entry.clock > current.clock
                        || (entry.clock == current.clock && is_null && current.state != NULL_STATE)
                }
            };
            if !take {
                continue;
            }
            let previous = current.map(|c| (c.owner, c.state.len()));
            let taken_over = previous.map(|(owner, _)| owner) != Some(member);
            if taken_over {
                if self.owned.get(&member).copied().unwrap_or(0) >= limits.max_clients_per_member {
                    failed = Some(AwarenessError::TooManyClients {
                        limit: limits.max_clients_per_member,
                    });
                    break;
                }
                if previous.is_none() && self.entries.len() >= limits.max_clients {
                    failed = Some(AwarenessError::RoomFull {
                        limit: limits.max_clients,
                    });
                    break;
                }
            }
            let old_len = previous.map_or(0, |(_, len)| len);
            if entry.state.len() > old_len
                && !Memory::process().try_charge(entry.state.len() - old_len)
            {
                failed = Some(AwarenessError::OverBudget);
                break;
            }
            if entry.state.len() < old_len {
                Memory::process().release(old_len - entry.state.len());
            }
            self.bytes = self.bytes + entry.state.len() - old_len;
            if let Some((owner, _)) = previous.filter(|(owner, _)| *owner != member) {
                self.disown(owner);
            }
            if taken_over {
                *self.owned.entry(member).or_default() += 1;
            }
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
        if accepted.is_empty() {
            return failed.map_or(Ok(None), Err);
        }
        self.snapshot = None;
        if let Some(error) = failed {
            return Err(error);
        }
        Ok(Some(encode_update(
            accepted
                .iter()
                .map(|e| (e.client, e.clock, e.state.as_ref())),
        )))
    }

    fn disown(&mut self, owner: MemberId) {
        if let Some(count) = self.owned.get_mut(&owner) {
            *count -= 1;
            if *count == 0 {
                self.owned.remove(&owner);
            }
        }
    }

    /// Every live (non-null) state; None when there are none.
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

    /// The snapshot as an awareness message, for a joiner or a query: encoded once per change
    /// of the table, shared, and charged to the process's memory (None if it does not fit).
    pub fn snapshot_frame(&mut self) -> Option<Bytes> {
        if let Some(frame) = &self.snapshot {
            return frame.clone();
        }
        // Charged while any member holds it; when it does not fit, joiners go without it (they
        // get every state at its next renewal) rather than the process growing.
        let Some(snapshot) = self.snapshot() else {
            self.snapshot = Some(None);
            return None;
        };
        let frame = Memory::process()
            .charged(Message::Awareness(snapshot).encode())
            .ok()?;
        self.snapshot = Some(Some(frame.clone()));
        Some(frame)
    }

    /// Removes the states owned by a leaving member; returns the removal to broadcast.
    pub fn remove_member(&mut self, member: MemberId) -> Option<Bytes> {
        // A member that owns no id has nothing to remove.
        self.owned.remove(&member)?;
        self.snapshot = None;
        let mut removed = Vec::new();
        let mut freed = 0;
        self.entries.retain(|client, entry| {
            if entry.owner != member {
                return true;
            }
            freed += entry.state.len();
            // Removed at the same clock, as y-protocols' server does: peers take a null state
            // at an equal clock as a removal, and the client's next renewal (clock + 1) is
            // then accepted again, should it come back on another connection.
            if entry.state != NULL_STATE {
                removed.push((*client, entry.clock));
            }
            false
        });
        self.bytes -= freed;
        Memory::process().release(freed);
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

    /// Bytes of the states held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Drop for AwarenessTable {
    fn drop(&mut self) {
        Memory::process().release(self.bytes);
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
            .apply(
                1,
                &update(&[(10, 1, "{\"a\":1}")]),
                &AwarenessLimits::default(),
            )
            .unwrap();
        assert_eq!(relay, Some(update(&[(10, 1, "{\"a\":1}")])));
        assert_eq!(
            table
                .apply(
                    1,
                    &update(&[(10, 1, "{\"a\":2}")]),
                    &AwarenessLimits::default()
                )
                .unwrap(),
            None
        );
        assert!(table
            .apply(
                1,
                &update(&[(10, 2, "{\"a\":2}")]),
                &AwarenessLimits::default()
            )
            .unwrap()
            .is_some());
    }

    #[test]
    fn another_member_cannot_overwrite_or_remove_a_state() {
        let mut table = AwarenessTable::default();
        table
            .apply(1, &update(&[(10, 1, "{}")]), &AwarenessLimits::default())
            .unwrap();
        assert_eq!(
            table
                .apply(2, &update(&[(10, 5, "null")]), &AwarenessLimits::default())
                .unwrap(),
            None
        );
        assert!(table.snapshot().is_some());
    }

    #[test]
    fn a_leaver_s_states_are_removed_at_their_clock() {
        let mut table = AwarenessTable::default();
        table
            .apply(1, &update(&[(10, 3, "{}")]), &AwarenessLimits::default())
            .unwrap();
        table
            .apply(2, &update(&[(20, 1, "{}")]), &AwarenessLimits::default())
            .unwrap();
        assert_eq!(table.remove_member(1), Some(update(&[(10, 3, "null")])));
        assert_eq!(table.snapshot(), Some(update(&[(20, 1, "{}")])));
        assert_eq!(table.remove_member(1), None);
    }

    #[test]
    fn a_member_may_own_only_so_many_ids_and_a_room_so_many() {
        let limits = AwarenessLimits {
            max_clients_per_member: 2,
            max_clients: 3,
            ..AwarenessLimits::default()
        };
        let mut table = AwarenessTable::default();
        let many = update(&[(1, 1, "{}"), (2, 1, "{}"), (3, 1, "{}")]);
        assert_eq!(
            table.apply(1, &many, &limits),
            Err(AwarenessError::TooManyClients { limit: 2 })
        );
        assert_eq!(table.len(), 2);
        // Renewing its own ids is always fine.
        assert!(table
            .apply(1, &update(&[(1, 2, "{}")]), &limits)
            .unwrap()
            .is_some());
        table.apply(2, &update(&[(4, 1, "{}")]), &limits).unwrap();
        assert_eq!(
            table.apply(3, &update(&[(5, 1, "{}")]), &limits),
            Err(AwarenessError::RoomFull { limit: 3 })
        );
        // A leaver's ids count no more.
        table.remove_member(1);
        assert!(table
            .apply(3, &update(&[(5, 1, "{}")]), &limits)
            .unwrap()
            .is_some());
    }

    #[test]
    fn the_snapshot_is_encoded_again_only_after_a_change() {
        let mut table = AwarenessTable::default();
        table
            .apply(1, &update(&[(10, 1, "{}")]), &AwarenessLimits::default())
            .unwrap();
        let first = table.snapshot_frame().unwrap();
        // The same allocation: not rebuilt.
        assert_eq!(table.snapshot_frame().unwrap().as_ptr(), first.as_ptr());
        table
            .apply(
                1,
                &update(&[(10, 2, "{\"a\":1}")]),
                &AwarenessLimits::default(),
            )
            .unwrap();
        let again = Message::Awareness(update(&[(10, 2, "{\"a\":1}")])).encode();
        assert_eq!(table.snapshot_frame(), Some(again));
    }

    #[test]
    fn a_lying_count_does_not_allocate() {
        let payload = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode_update(&payload).is_err());
    }
}
