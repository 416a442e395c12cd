//! Updates that wait, outside yrs, for edits the document lacks (see `RoomCore::apply`).
//!
//! Indexed by what each update needs, so that the document advancing releases exactly the
//! updates it unblocks: adding, releasing and counting are O(log n) each, whatever order a
//! peer sends its updates in (200,000 updates in reverse order cost a minute of CPU when each
//! arrival summed the set and each release searched it).

use std::collections::{BTreeSet, HashMap, VecDeque};

use bytes::Bytes;
use yrs::block::ClientID;
use yrs::StateVector;

use crate::awareness::MemberId;
use crate::scan::ScanReport;

/// A member's update that starts beyond the document's clocks.
#[derive(Debug)]
pub struct Waiting {
    pub member: MemberId,
    pub update: Bytes,
    pub report: ScanReport,
    /// What it was charged as in the room's document cost.
    pub cost: usize,
    /// Clients whose clock it still waits for.
    unmet: usize,
}

#[derive(Debug, Default)]
pub struct WaitingSet {
    entries: HashMap<u64, Waiting>,
    /// Per client, the (clock needed, entry) pairs not met yet.
    needs: HashMap<u64, BTreeSet<(u32, u64)>>,
    /// Entries whose needs are all met, in the order they were met (lowest clock first).
    ready: VecDeque<u64>,
    /// Bytes waiting per member.
    bytes: HashMap<MemberId, usize>,
    /// What the entries were charged, in all.
    cost: usize,
    next: u64,
}

impl WaitingSet {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What the waiting updates were charged, in all.
    pub fn cost(&self) -> usize {
        self.cost
    }

    /// Bytes of `member`'s updates that wait.
    pub fn member_bytes(&self, member: MemberId) -> usize {
        self.bytes.get(&member).copied().unwrap_or(0)
    }

    /// Adds an update that does not fit `sv`.
    pub fn insert(
        &mut self,
        member: MemberId,
        update: Bytes,
        report: ScanReport,
        cost: usize,
        sv: &StateVector,
    ) {
        let key = self.next;
        self.next += 1;
        let mut unmet = 0;
        for client in &report.clients {
            if client.needs > sv.get(&ClientID::new(client.client))
                && self
                    .needs
                    .entry(client.client)
                    .or_default()
                    .insert((client.needs, key))
            {
                unmet += 1;
            }
        }
        *self.bytes.entry(member).or_default() += update.len();
        self.cost += cost;
        if unmet == 0 {
            self.ready.push_back(key);
        }
        self.entries.insert(
            key,
            Waiting {
                member,
                update,
                report,
                cost,
                unmet,
            },
        );
    }

    /// The document reached `sv` after integrating structs of `clients`: what waited for
    /// those clients' clocks only is ready now.
    pub fn advanced(&mut self, clients: impl IntoIterator<Item = u64>, sv: &StateVector) {
        for client in clients {
            let Some(needs) = self.needs.get_mut(&client) else {
                continue;
            };
            let clock = sv.get(&ClientID::new(client));
            while let Some(&(need, key)) = needs.first() {
                if need > clock {
                    break;
                }
                needs.pop_first();
                if let Some(entry) = self.entries.get_mut(&key) {
                    entry.unmet -= 1;
                    if entry.unmet == 0 {
                        self.ready.push_back(key);
                    }
                }
            }
            if needs.is_empty() {
                self.needs.remove(&client);
            }
        }
    }

    /// The oldest update whose needs are met, taken out of the set.
    pub fn pop_ready(&mut self) -> Option<Waiting> {
        while let Some(key) = self.ready.pop_front() {
            if let Some(entry) = self.entries.remove(&key) {
                self.forget_bytes(entry.member, entry.update.len());
                self.cost -= entry.cost;
                return Some(entry);
            }
        }
        None
    }

    /// Drops a member's updates (it still holds them, and sends them again when it comes
    /// back); returns the cost they were charged.
    pub fn remove_member(&mut self, member: MemberId) -> usize {
        if self.bytes.remove(&member).is_none() {
            return 0;
        }
        let keys: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, w)| w.member == member)
            .map(|(key, _)| *key)
            .collect();
        let mut cost = 0;
        for key in keys {
            let Some(entry) = self.entries.remove(&key) else {
                continue;
            };
            cost += entry.cost;
            self.cost -= entry.cost;
            for client in &entry.report.clients {
                if let Some(needs) = self.needs.get_mut(&client.client) {
                    needs.remove(&(client.needs, key));
                    if needs.is_empty() {
                        self.needs.remove(&client.client);
                    }
                }
            }
        }
        cost
    }

    fn forget_bytes(&mut self, member: MemberId, len: usize) {
        if let Some(bytes) = self.bytes.get_mut(&member) {
            *bytes = bytes.saturating_sub(len);
            if *bytes == 0 {
                self.bytes.remove(&member);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::ClientClocks;

    fn report(client: u64, start: u32, end: u32) -> ScanReport {
        ScanReport {
            structs: 1,
            deletes: 0,
            siblings: 0,
            max_depth: 0,
            clients: vec![ClientClocks {
                client,
                start,
                end,
                needs: start,
                skips: false,
            }],
        }
    }

    fn sv(entries: &[(u64, u32)]) -> StateVector {
        let mut sv = StateVector::default();
        for (client, clock) in entries {
            sv.set_max(ClientID::new(*client), *clock);
        }
        sv
    }

    #[test]
    fn the_document_advancing_releases_what_it_unblocks() {
        let mut set = WaitingSet::default();
        let empty = sv(&[]);
        // Clocks 3.., 2.., 1.. of client 7 wait for clock 1.
        for start in [3, 2, 1] {
            set.insert(
                9,
                Bytes::from_static(b"u"),
                report(7, start, start + 1),
                10,
                &empty,
            );
        }
        assert_eq!(set.member_bytes(9), 3);
        assert!(set.pop_ready().is_none());
        set.advanced([7], &sv(&[(7, 1)]));
        assert_eq!(set.pop_ready().map(|w| w.report.clients[0].start), Some(1));
        assert!(set.pop_ready().is_none());
        set.advanced([7], &sv(&[(7, 3)]));
        let starts: Vec<u32> = std::iter::from_fn(|| set.pop_ready())
            .map(|w| w.report.clients[0].start)
            .collect();
        // Lowest need first: each applies on top of the one before.
        assert_eq!(starts, vec![2, 3]);
        assert!(set.is_empty());
        assert_eq!(set.member_bytes(9), 0);
    }

    #[test]
    fn a_leaver_s_updates_are_dropped_with_their_cost() {
        let mut set = WaitingSet::default();
        let empty = sv(&[]);
        set.insert(1, Bytes::from_static(b"a"), report(7, 5, 6), 10, &empty);
        set.insert(2, Bytes::from_static(b"b"), report(7, 5, 6), 20, &empty);
        assert_eq!(set.remove_member(1), 10);
        assert_eq!(set.remove_member(1), 0);
        set.advanced([7], &sv(&[(7, 5)]));
        assert_eq!(set.pop_ready().map(|w| w.member), Some(2));
        assert!(set.is_empty());
    }

    #[test]
    fn many_updates_in_reverse_order_take_linear_time() {
        // Not a timing: the number of index entries visited is what stays linear.
        let mut set = WaitingSet::default();
        let empty = sv(&[]);
        let n = 50_000u32;
        for start in (1..=n).rev() {
            set.insert(
                1,
                Bytes::from_static(b"u"),
                report(7, start, start + 1),
                1,
                &empty,
            );
        }
        let mut clock = 1;
        let mut applied = 0;
        set.advanced([7], &sv(&[(7, clock)]));
        while let Some(w) = set.pop_ready() {
            clock = clock.max(w.report.clients[0].end);
            applied += 1;
            set.advanced([7], &sv(&[(7, clock)]));
        }
        assert_eq!(applied, n);
        assert!(set.is_empty());
    }
}
