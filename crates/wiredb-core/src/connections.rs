//! The live connections of a server: what each asked for, the decision it waits for, and the
//! room member it became. From outside (Python) one may answer a pending authorization, list a
//! room's connections, close them, or make them read-only.
//!
//! Lock order: this table, then a room's lock (taken by `RoomCore` calls made under it). A room
//! never calls back here, so the order cannot be reversed. Closing or downgrading a member
//! takes the room's lock: when such a call returns, no update of that member is applied.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::auth::{Decision, Request};
use crate::awareness::MemberId;
use crate::queue::{CloseReason, FrameQueue};
use crate::room::{Access, JoinKind, RoomCore};

enum Phase {
    /// Waiting for a decision (the sender is taken by `decide`).
    Authorizing(Option<oneshot::Sender<Decision>>),
    /// Let in, on its way into its room; closed on arrival if closed meanwhile.
    Admitted { closed: Option<CloseReason> },
    Member {
        core: Arc<RoomCore>,
        member: MemberId,
    },
    /// Closed from outside; its socket is being closed.
    Closed,
}

struct Entry {
    request: Arc<Request>,
    identity: Option<String>,
    access: Access,
    phase: Phase,
}

/// A connection as listed for Python.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub request: Arc<Request>,
    pub identity: Option<String>,
    pub access: Access,
    /// Whether it has joined its room yet (else it waits for the room to open).
    pub joined: bool,
}

#[derive(Default)]
pub struct Connections {
    table: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
}

/// Removes its connection from the table when dropped (however the connection ends).
pub struct Registration {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

impl Connections {
    pub fn new() -> Arc<Self> {
        Arc::new(Connections::default())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Adds a connection, waiting for a decision; the receiver gets it.
    pub fn register(
        self: &Arc<Self>,
        request: Arc<Request>,
    ) -> (Registration, oneshot::Receiver<Decision>) {
        let (tx, rx) = oneshot::channel();
        let id = request.id;
        self.lock().insert(
            id,
            Entry {
                request,
                identity: None,
                access: Access::ReadWrite,
                phase: Phase::Authorizing(Some(tx)),
            },
        );
        let registration = Registration {
            connections: self.clone(),
            id,
        };
        (registration, rx)
    }

    /// Answers a connection waiting for a decision. False if it is not waiting any more (it
    /// left, timed out, or was decided already).
    pub fn decide(&self, id: u64, decision: Decision) -> bool {
        let sender = match self.lock().get_mut(&id) {
            Some(Entry {
                phase: Phase::Authorizing(sender),
                ..
            }) => sender.take(),
            _ => None,
        };
        sender.is_some_and(|sender| sender.send(decision).is_ok())
    }

    /// Whether connection `id` still waits for a decision.
    pub fn is_waiting(&self, id: u64) -> bool {
        matches!(
            self.lock().get(&id),
            Some(Entry {
                phase: Phase::Authorizing(Some(_)),
                ..
            })
        )
    }

    /// The connection was let in with this access.
    pub fn admit(&self, id: u64, access: Access, identity: Option<String>) {
        if let Some(entry) = self.lock().get_mut(&id) {
            entry.access = access;
            entry.identity = identity;
            entry.phase = Phase::Admitted { closed: None };
        }
    }

    /// Joins an admitted connection to its room as a peer with the access it has now; the
    /// reason instead if it was closed while the room opened.
    pub fn join(
        &self,
        id: u64,
        core: &Arc<RoomCore>,
        queue: Arc<FrameQueue>,
    ) -> Result<MemberId, CloseReason> {
        let mut table = self.lock();
        let Some(entry) = table.get_mut(&id) else {
            return Err(CloseReason::new(1011, "connection unknown"));
        };
        if let Phase::Admitted {
            closed: Some(reason),
        } = &entry.phase
        {
            return Err(reason.clone());
        }
        let member = core.join_as(queue, JoinKind::Peer, entry.access);
        entry.phase = Phase::Member {
            core: core.clone(),
            member,
        };
        Ok(member)
    }

    /// The connections of a room that were let in (joined, or waiting for the room to open).
    pub fn in_room(&self, room: &str) -> Vec<ConnectionInfo> {
        self.lock()
            .values()
            .filter(|e| e.request.room == room)
            .filter_map(|e| {
                let joined = match e.phase {
                    Phase::Authorizing(_) | Phase::Closed => return None,
                    Phase::Admitted { .. } => false,
                    Phase::Member { .. } => true,
                };
                Some(ConnectionInfo {
                    request: e.request.clone(),
                    identity: e.identity.clone(),
                    access: e.access,
                    joined,
                })
            })
            .collect()
    }

    /// Closes connections of `room` that were let in (`ids`, or all of them) with `reason`.
    /// Once this returns nothing they send is applied. Returns how many it closed.
    pub fn close(&self, room: &str, ids: Option<&[u64]>, reason: &CloseReason) -> usize {
        let mut table = self.lock();
        let mut closed = 0;
        for entry in Self::selected(&mut table, room, ids) {
            match &mut entry.phase {
                Phase::Authorizing(_) | Phase::Closed => continue,
                Phase::Admitted { closed: slot } => {
                    slot.get_or_insert_with(|| reason.clone());
                }
                Phase::Member { core, member } => {
                    if core.close_member(*member, reason.clone()) {
                        entry.phase = Phase::Closed;
                    } else {
                        continue;
                    }
                }
            }
            closed += 1;
        }
        closed
    }

    /// Changes the access of connections of `room` that were let in (`ids`, or all). Once this
    /// returns, no update of one made read-only is applied. Returns how many it changed.
    pub fn set_access(&self, room: &str, ids: Option<&[u64]>, access: Access) -> usize {
        let mut table = self.lock();
        let mut changed = 0;
        for entry in Self::selected(&mut table, room, ids) {
            match &entry.phase {
                Phase::Authorizing(_) | Phase::Closed => continue,
                Phase::Admitted { .. } => {}
                Phase::Member { core, member } => {
                    if !core.set_access(*member, access) {
                        continue;
                    }
                }
            }
            entry.access = access;
            changed += 1;
        }
        changed
    }

    fn selected<'a>(
        table: &'a mut HashMap<u64, Entry>,
        room: &'a str,
        ids: Option<&'a [u64]>,
    ) -> impl Iterator<Item = &'a mut Entry> + 'a {
        table.iter_mut().filter_map(move |(id, entry)| {
            let chosen = entry.request.room == room && ids.is_none_or(|ids| ids.contains(id));
            chosen.then_some(entry)
        })
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode_frame, Message};
    use crate::queue::QueueLimits;
    use crate::room::RoomLimits;
    use crate::wake::Waker;
    use bytes::Bytes;
    use tokio::sync::Notify;

    fn request(id: u64, room: &str) -> Arc<Request> {
        Arc::new(Request {
            id,
            path: format!("/{room}"),
            room: room.into(),
            query: String::new(),
            headers: Vec::new(),
            peer: "127.0.0.1:1".parse().unwrap(),
        })
    }

    fn queue() -> Arc<FrameQueue> {
        Arc::new(FrameQueue::new(
            QueueLimits::default(),
            Waker::Tokio(Arc::new(Notify::new())),
        ))
    }

    fn update() -> Bytes {
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("t");
        let mut txn = yrs::Transact::transact_mut(&doc);
        yrs::Text::insert(&text, &mut txn, 0, "x");
        yrs::TransactionMut::encode_update_v1(&txn).into()
    }

    #[tokio::test]
    async fn a_decision_reaches_its_waiting_connection_once() {
        let connections = Connections::new();
        let (_registration, rx) = connections.register(request(1, "r"));
        let allow = Decision::Allow {
            access: Access::ReadOnly,
            identity: None,
        };
        assert!(connections.is_waiting(1));
        assert!(connections.decide(1, allow.clone()));
        assert!(!connections.is_waiting(1));
        assert!(!connections.decide(1, allow.clone()));
        assert!(!connections.decide(2, allow.clone()));
        assert_eq!(rx.await.unwrap(), allow);
    }

    #[test]
    fn closing_a_member_stops_its_updates_at_once() {
        let connections = Connections::new();
        let core = RoomCore::new("r", RoomLimits::default());
        let (_a, _) = connections.register(request(1, "r"));
        let (_b, _) = connections.register(request(2, "r"));
        let (_c, _) = connections.register(request(3, "other"));
        for id in [1, 2, 3] {
            connections.admit(id, Access::ReadWrite, Some(format!("user{id}")));
        }
        let (qa, qb) = (queue(), queue());
        let a = connections.join(1, &core, qa.clone()).unwrap();
        connections.join(2, &core, qb).unwrap();
        assert_eq!(connections.in_room("r").len(), 2);

        let reason = CloseReason::new(4000, "kicked");
        assert_eq!(connections.close("r", Some(&[1]), &reason), 1);
        assert!(matches!(
            core.handle(a, Message::Update(update())),
            Err(crate::room::RoomError::NotAMember)
        ));
        assert_eq!(qa.drain().closed, Some(reason.clone()));
        assert_eq!(connections.in_room("r").len(), 1);
        assert!(core.encode_state_as_update().len() <= 2);

        // A connection closed while its room opened is refused on arrival.
        assert_eq!(connections.close("other", None, &reason), 1);
        assert_eq!(connections.join(3, &core, queue()), Err(reason));
    }

    #[test]
    fn a_member_made_read_only_is_told_and_its_updates_are_dropped() {
        let connections = Connections::new();
        let core = RoomCore::new("r", RoomLimits::default());
        let (_a, _) = connections.register(request(1, "r"));
        connections.admit(1, Access::ReadWrite, None);
        let q = queue();
        let a = connections.join(1, &core, q.clone()).unwrap();
        q.drain();
        assert_eq!(connections.set_access("r", None, Access::ReadOnly), 1);
        let told: Vec<_> = q
            .drain()
            .frames
            .iter()
            .flat_map(|f| decode_frame(f).unwrap())
            .collect();
        assert_eq!(
            told,
            vec![Message::Auth {
                kind: 0,
                reason: Bytes::from_static(b"read-only")
            }]
        );
        let before = core.encode_state_as_update();
        core.handle(a, Message::Update(update())).unwrap();
        assert_eq!(core.encode_state_as_update(), before);
        assert_eq!(connections.in_room("r")[0].access, Access::ReadOnly);
    }
}
