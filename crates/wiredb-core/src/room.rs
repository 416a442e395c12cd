//! The room core: one yrs document and one awareness table shared by the members of a room.
//!
//! Members are queues. An update from one member is applied once, encoded once, and the same
//! `Bytes` go to every other member, never back to the sender. No await and no I/O happens
//! under the room's lock, so any thread (a tokio worker, a Python thread) may call in.
//!
//! What a member makes the room hold is charged to the process's [`Memory`] (the document by
//! its cost in memory, awareness states, the frames queued for members), and the time its
//! frames keep the room busy to its own and the room's [`Work`]: past either, it is refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact};

use crate::awareness::{AwarenessError, AwarenessLimits, AwarenessTable, MemberId};
use crate::budget::{self, Memory, Work, WorkLimits};
use crate::clip::Clipped;
use crate::guard::{self, GuardError, GuardLimits};
use crate::protocol::{messages, DecodeError, Message};
use crate::queue::{CloseReason, FrameQueue, Pushed};
use crate::waiting::WaitingSet;

#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    #[error("malformed message: {0}")]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error("not a member of the room")]
    NotAMember,
    #[error("the room's document would exceed its quota of {limit} bytes of memory")]
    Quota { limit: usize },
    #[error("more than {limit} bytes of updates wait for edits the room does not have")]
    TooFarAhead { limit: usize },
    #[error(transparent)]
    Awareness(#[from] AwarenessError),
    #[error("the server's memory limit of {limit} bytes is reached")]
    OverBudget { limit: usize },
    #[error("too much work: the connection kept its room busy past its share")]
    TooMuchWork,
    #[error("the update inserts {siblings} items at one position of a document of ~{items} items: too costly to integrate")]
    TooCostly { siblings: u64, items: u64 },
}

impl RoomError {
    /// The close frame a WebSocket (or any member) that caused it gets. One policy for every
    /// wire: 1002 for bytes that break the protocol, 1007 for updates yrs refuses, 1008 for a
    /// peer past its share, 1009 for too much data, 1013 while the server is full.
    pub fn close_reason(&self) -> CloseReason {
        match self {
            RoomError::Decode(_) | RoomError::Awareness(AwarenessError::Decode(_)) => {
                CloseReason::new(1002, "malformed message")
            }
            RoomError::Quota { .. } => CloseReason::new(1009, "document quota exceeded"),
            RoomError::TooFarAhead { .. } => {
                CloseReason::new(1008, "too many updates out of order")
            }
            RoomError::Awareness(AwarenessError::TooManyClients { .. }) => {
                CloseReason::new(1008, "too many awareness clients")
            }
            RoomError::Awareness(AwarenessError::RoomFull { .. }) => {
                CloseReason::new(1008, "room awareness full")
            }
            RoomError::OverBudget { .. } | RoomError::Awareness(AwarenessError::OverBudget) => {
                CloseReason::new(1013, "server memory limit reached")
            }
            RoomError::TooMuchWork => CloseReason::new(1008, "too much work"),
            RoomError::TooCostly { .. } => CloseReason::new(1008, "update too costly"),
            RoomError::Guard(_) | RoomError::NotAMember => CloseReason::new(1007, "invalid update"),
        }
    }
}

/// A room's limits, with defaults suited to collaborative editing.
#[derive(Debug, Clone, Copy)]
pub struct RoomLimits {
    pub guard: GuardLimits,
    /// Quota of the document, counted as what it costs in memory (see
    /// [`budget::document_cost`]). An update beyond it is refused.
    pub max_document_bytes: usize,
    /// Largest awareness state (one client's JSON) relayed.
    pub max_awareness_state_bytes: usize,
    /// Awareness updates (and queries) accepted per member and second; the rest are dropped.
    pub max_awareness_per_second: u32,
    /// Awareness client ids one member may own, and the room may hold.
    pub max_awareness_clients_per_member: usize,
    pub max_awareness_clients: usize,
    /// Bytes of a member's updates that may wait for earlier edits the room lacks (a client
    /// back with offline edits sends them before its sync step 2 catches the room up).
    pub max_waiting_bytes: usize,
    /// Time a member's frames, and all the room's, may keep the room busy.
    pub member_work: WorkLimits,
    pub room_work: WorkLimits,
    /// Comparisons an update's inserts may cost yrs, counted as the most items it inserts at
    /// one position times the items the document may already hold there (all of them, at
    /// most): two updates of 15,000 items at one position (YATA's worst case) froze a room
    /// for 16-32 s. About a second of integration at the default.
    pub max_conflict_work: u64,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits {
            guard: GuardLimits::default(),
            max_document_bytes: 256 << 20,
            max_awareness_state_bytes: 64 << 10,
            max_awareness_per_second: 60,
            max_awareness_clients_per_member: 8,
            max_awareness_clients: 4096,
            max_waiting_bytes: 16 << 20,
            member_work: WorkLimits::MEMBER,
            room_work: WorkLimits::ROOM,
            max_conflict_work: 20_000_000,
        }
    }
}

impl RoomLimits {
    fn awareness(&self) -> AwarenessLimits {
        AwarenessLimits {
            max_state_bytes: self.max_awareness_state_bytes,
            max_clients_per_member: self.max_awareness_clients_per_member,
            max_clients: self.max_awareness_clients,
        }
    }
}

/// How a member starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// A remote peer: it is sent the room's sync step 1 and the current awareness, and counts
    /// as a client (the room closes when its last client leaves).
    Peer,
    /// An in-process mirror of the document (a room's `doc` in Python, a store): it is sent the
    /// whole document as a sync step 2 and does not keep the room open.
    Mirror,
}

/// What a member may do to the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    /// Sent the document and its live updates; what it sends is not applied (it is told so
    /// with a y-protocols permission-denied message). Its awareness still works: a viewer is
    /// present in the room, its cursor and name are shown, it changes no document.
    ReadOnly,
}

/// The reason of the permission-denied message a read-only member gets.
pub const READ_ONLY_REASON: &str = "read-only";

struct Member {
    queue: Arc<FrameQueue>,
    kind: JoinKind,
    access: Access,
    /// Awareness updates accepted in the current one-second window, and when it started.
    awareness_window: (Instant, u32),
    /// It has been sent the document (a peer: the sync step 2 answering its step 1). Until
    /// then it is sent no live updates: that step 2 holds them all, and an update relayed
    /// before it could start beyond what the peer has, which is where yrs goes wrong (see
    /// `RoomCore::apply`).
    has_document: bool,
    /// Time its frames may still keep the room busy.
    work: Work,
}

impl Member {
    /// Counts one awareness message (or query) in its window; false past the rate.
    fn awareness_allowed(&mut self, per_second: u32) -> bool {
        let (start, count) = &mut self.awareness_window;
        if start.elapsed() >= Duration::from_secs(1) {
            *start = Instant::now();
            *count = 0;
        }
        *count += 1;
        *count <= per_second
    }
}

/// What an applied update gives the members.
enum Relay {
    /// Nothing yet: the update waits.
    Nothing,
    /// The update as it came, for everyone but its sender.
    AsSent(Bytes),
    /// What the document integrated, re-encoded, for everyone: it can hold other members'
    /// content that was waiting or pending, which the sender lacks too.
    Integrated(Bytes),
}

struct RoomState {
    doc: Doc,
    /// Updates that wait for the document to catch up.
    waiting: WaitingSet,
    awareness: AwarenessTable,
    members: HashMap<MemberId, Member>,
    limits: RoomLimits,
    /// What the document and the waiting updates cost in memory (charged to the process).
    document_cost: usize,
    /// `document_cost` when the document was last measured.
    measured_cost: usize,
    /// Time the room's members may still keep it busy.
    work: Work,
    /// The sync step 2 that answers an empty state vector (a joiner with a new document), and
    /// the same content as an update (a resync), encoded once and shared until the document
    /// changes: when many clients join a large document at once, the room encodes it once.
    whole_step2: Option<Bytes>,
    whole_update: Option<Bytes>,
    /// Set when the room failed (`close_peers`): a peer that joins later is closed at once.
    closed: Option<CloseReason>,
}

impl RoomState {
    /// The document's integrated content that a peer at `sv` lacks (pending content is never
    /// sent: see `RoomCore::apply`). Should even that panic, the document is rebuilt and
    /// encoded again.
    fn encode(&mut self, room: &str, sv: &StateVector) -> Vec<u8> {
        if let Some(update) = guard::encode_state(&self.doc, sv) {
            return update;
        }
        tracing::warn!(room = %Clipped(room), "the document could not be encoded; rebuilding it");
        self.changed();
        self.doc = guard::rebuild(&self.doc, None, &self.limits.guard);
        guard::encode_state(&self.doc, sv).unwrap_or_else(|| crate::protocol::EMPTY_UPDATE.to_vec())
    }

    /// Counts an awareness message (or query) of `member` in its rate window; false past the
    /// rate.
    fn awareness_allowed(&mut self, member: MemberId) -> Result<bool, RoomError> {
        let per_second = self.limits.max_awareness_per_second;
        let entry = self.members.get_mut(&member).ok_or(RoomError::NotAMember)?;
        Ok(entry.awareness_allowed(per_second))
    }

    /// The document changed: what was encoded of it is stale.
    fn changed(&mut self) {
        self.whole_step2 = None;
        self.whole_update = None;
    }

    /// Charges `cost` to the document, measuring it first if the estimate would pass the
    /// quota (estimates count every edit as its own item; yrs merges consecutive ones). A
    /// measurement costs an encode of the document, so it runs again only after the estimate
    /// grew by an eighth of the quota.
    fn charge_document(&mut self, room: &str, cost: usize) -> Result<(), RoomError> {
        let limit = self.limits.max_document_bytes;
        if self.document_cost.saturating_add(cost) > limit
            && self.document_cost - self.measured_cost.min(self.document_cost) >= limit / 8
        {
            let encoded = self.encode(room, &StateVector::default());
            let measured = guard::check_update(&encoded, &self.limits.guard)
                .map(|c| budget::document_cost(encoded.len(), &c.report))
                .unwrap_or(encoded.len())
                .saturating_add(self.waiting.cost());
            if measured < self.document_cost {
                Memory::process().release(self.document_cost - measured);
                self.document_cost = measured;
            }
            self.measured_cost = self.document_cost;
        }
        if self.document_cost.saturating_add(cost) > limit {
            return Err(RoomError::Quota { limit });
        }
        if !Memory::process().try_charge(cost) {
            return Err(over_budget());
        }
        self.document_cost += cost;
        Ok(())
    }

    fn release_document(&mut self, cost: usize) {
        let cost = cost.min(self.document_cost);
        self.document_cost -= cost;
        Memory::process().release(cost);
    }
}

impl Drop for RoomState {
    fn drop(&mut self) {
        Memory::process().release(self.document_cost);
    }
}

fn over_budget() -> RoomError {
    RoomError::OverBudget {
        limit: Memory::process().limit(),
    }
}

/// A frame for members, charged to the process while any member holds it (if it fits: a
/// frame is built only after the check that it should).
fn charged(frame: Bytes) -> Bytes {
    Memory::process()
        .charged(frame)
        .unwrap_or_else(|frame| frame)
}

/// Whether `bytes` more could be held now.
fn fits_memory(bytes: usize) -> bool {
    let memory = Memory::process();
    memory.used().saturating_add(bytes) <= memory.limit()
}

pub struct RoomCore {
    id: String,
    state: Mutex<RoomState>,
    next_member: AtomicU64,
    /// Updates wait to be applied: any frame may set off a long run of applies.
    has_waiting: AtomicBool,
    /// Frames being handled that may take long (see [`RoomCore::heavy`]).
    heavy: AtomicUsize,
}

/// A heavy frame being handled; see [`RoomCore::heavy`].
pub struct Heavy<'a>(&'a AtomicUsize);

impl Drop for Heavy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for RoomCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomCore").field("id", &self.id).finish()
    }
}

impl RoomCore {
    pub fn new(id: impl Into<String>, limits: RoomLimits) -> Arc<Self> {
        Arc::new(RoomCore {
            id: id.into(),
            state: Mutex::new(RoomState {
                doc: Doc::new(),
                waiting: WaitingSet::default(),
                awareness: AwarenessTable::default(),
                members: HashMap::new(),
                limits,
                document_cost: 0,
                measured_cost: 0,
                work: Work::new(limits.room_work),
                whole_step2: None,
                whole_update: None,
                closed: None,
            }),
            next_member: AtomicU64::new(1),
            has_waiting: AtomicBool::new(false),
            heavy: AtomicUsize::new(0),
        })
    }

    /// Applies a server's limits to a room created elsewhere (by a Python room factory).
    pub fn set_limits(&self, limits: RoomLimits) {
        let mut state = self.lock();
        state.limits = limits;
        state.work = Work::new(limits.room_work);
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether a heavy frame (see [`RoomCore::heavy`]) is being handled: the room's lock may
    /// be held for long, and a thread that serves other connections should not wait for it.
    pub fn busy(&self) -> bool {
        self.heavy.load(Ordering::Relaxed) > 0
    }

    /// Whether a frame of `len` bytes may keep the room busy for long: it is large, updates
    /// wait (any frame may then set off a long run of applies), or another such frame is being
    /// handled (the room's lock is then held for long). A server hands such frames off the
    /// threads that serve every other connection; holding the returned guard while doing so
    /// marks the room busy.
    pub fn heavy(&self, len: usize) -> Option<Heavy<'_>> {
        const HEAVY_FRAME_BYTES: usize = 64 << 10;
        if len >= HEAVY_FRAME_BYTES || self.has_waiting.load(Ordering::Relaxed) || self.busy() {
            self.heavy.fetch_add(1, Ordering::Relaxed);
            Some(Heavy(&self.heavy))
        } else {
            None
        }
    }

    fn lock(&self) -> MutexGuard<'_, RoomState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a member; its first frames are queued before any broadcast can reach it.
    pub fn join(&self, queue: Arc<FrameQueue>, kind: JoinKind) -> MemberId {
        self.join_as(queue, kind, Access::ReadWrite)
    }

    /// Adds a member with the given access; a read-only peer is told so after its sync step 1
    /// (once: its refused updates are dropped without a word).
    pub fn join_as(&self, queue: Arc<FrameQueue>, kind: JoinKind, access: Access) -> MemberId {
        let id = self.next_member.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        match kind {
            JoinKind::Peer if state.closed.is_some() => {
                // A peer that got the room just before it failed: closed, never a member.
                queue.close(state.closed.clone().unwrap_or_else(CloseReason::normal));
                return id;
            }
            JoinKind::Peer => {
                let sv = state.doc.transact().state_vector().encode_v1();
                queue.push(Message::SyncStep1(sv.into()).encode());
                if access == Access::ReadOnly {
                    queue.push(read_only_notice());
                }
                if let Some(snapshot) = state.awareness.snapshot_frame() {
                    queue.push(snapshot);
                }
            }
            JoinKind::Mirror => {
                let update = state.encode(&self.id, &StateVector::default());
                queue.push(Message::SyncStep2(update.into()).encode());
            }
        }
        let work = Work::new(state.limits.member_work);
        state.members.insert(
            id,
            Member {
                queue,
                kind,
                access,
                awareness_window: (Instant::now(), 0),
                has_document: kind == JoinKind::Mirror,
                work,
            },
        );
        id
    }

    /// Removes a member and closes its queue with `reason` (its connection is closed after
    /// what was queued for it). Once this returns, nothing it sends is applied. Returns whether
    /// it was a member.
    pub fn close_member(&self, member: MemberId, reason: CloseReason) -> bool {
        let mut state = self.lock();
        let Some(entry) = state.members.remove(&member) else {
            return false;
        };
        entry.queue.close(reason);
        remove_member(&mut state, member);
        true
    }

    /// Closes every peer with `reason`, now and whenever one joins later: the room failed (its
    /// Python side raised) and serves nobody any more. Mirrors are left to their owners.
    /// Returns how many peers it closed.
    pub fn close_peers(&self, reason: CloseReason) -> usize {
        let mut state = self.lock();
        state.closed = Some(reason.clone());
        let peers: Vec<MemberId> = state
            .members
            .iter()
            .filter(|(_, m)| m.kind == JoinKind::Peer)
            .map(|(id, _)| *id)
            .collect();
        for id in &peers {
            if let Some(entry) = state.members.remove(id) {
                entry.queue.close(reason.clone());
            }
            remove_member(&mut state, *id);
        }
        peers.len()
    }

    /// Changes what a member may do. Once this returns, no update it sends is applied if it
    /// became read-only (a peer is told so); a peer made read-write again is asked (sync step
    /// 1) for the edits the room dropped meanwhile. Returns whether it is a member.
    pub fn set_access(&self, member: MemberId, access: Access) -> bool {
        let mut state = self.lock();
        let Some(entry) = state.members.get_mut(&member) else {
            return false;
        };
        if entry.access != access && entry.kind == JoinKind::Peer {
            match access {
                Access::ReadOnly => {
                    entry.queue.push(read_only_notice());
                }
                // Its edits were dropped meanwhile, and its next ones may build on them: a
                // sync step 1 asks it for everything the room lacks (y-protocols peers answer
                // with a step 2).
                Access::ReadWrite => {
                    let sv = state.doc.transact().state_vector().encode_v1();
                    if let Some(entry) = state.members.get(&member) {
                        entry.queue.push(Message::SyncStep1(sv.into()).encode());
                    }
                }
            }
        }
        if let Some(entry) = state.members.get_mut(&member) {
            entry.access = access;
        }
        true
    }

    /// What a member may do, or None if it is not a member.
    pub fn access(&self, member: MemberId) -> Option<Access> {
        self.lock().members.get(&member).map(|m| m.access)
    }

    /// Removes a member and its awareness states (broadcast as removed to the others).
    /// Returns the number of peers left.
    pub fn leave(&self, member: MemberId) -> usize {
        let mut state = self.lock();
        state.members.remove(&member);
        remove_member(&mut state, member);
        peers(&state)
    }

    pub fn peer_count(&self) -> usize {
        peers(&self.lock())
    }

    /// Handles every message of a frame a member sent, one at a time (a frame is never decoded
    /// whole). Requests that cost the room an encode (a sync step 1, an awareness query) are
    /// answered once per frame: the last step 1, one query. The time the frame kept the room
    /// busy is charged to the member and the room; past their share, the member is refused.
    pub fn handle_frame(&self, member: MemberId, frame: &Bytes) -> Result<(), RoomError> {
        // An empty frame carries nothing: not worth closing a connection over.
        if frame.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        let handled = self.handle_messages(member, frame);
        let now = Instant::now();
        let spent = now - start;
        let mut state = self.lock();
        self.has_waiting
            .store(!state.waiting.is_empty(), Ordering::Relaxed);
        let room_ok = state.work.spend(spent, now);
        let member_ok = state
            .members
            .get_mut(&member)
            .is_none_or(|m| m.work.spend(spent, now));
        handled?;
        if !(room_ok && member_ok) {
            tracing::warn!(room = %Clipped(&self.id), member, "a member kept the room too busy: refusing it");
            return Err(RoomError::TooMuchWork);
        }
        Ok(())
    }

    fn handle_messages(&self, member: MemberId, frame: &Bytes) -> Result<(), RoomError> {
        let mut step1 = None;
        let mut query = false;
        for message in messages(frame) {
            match message? {
                Message::SyncStep1(sv) => step1 = Some(sv),
                Message::QueryAwareness => query = true,
                message => self.handle(member, message)?,
            }
        }
        if let Some(sv) = step1 {
            self.handle(member, Message::SyncStep1(sv))?;
        }
        if query {
            self.handle(member, Message::QueryAwareness)?;
        }
        Ok(())
    }

    pub fn handle(&self, member: MemberId, message: Message) -> Result<(), RoomError> {
        match message {
            Message::SyncStep1(sv) => {
                let sv = guard::decode_state_vector(&sv)?;
                let mut state = self.lock();
                if !state.members.contains_key(&member) {
                    return Err(RoomError::NotAMember);
                }
                let step2 = match &state.whole_step2 {
                    Some(step2) if sv.is_empty() => step2.clone(),
                    _ => {
                        let update = state.encode(&self.id, &sv);
                        if !fits_memory(update.len()) {
                            return Err(over_budget());
                        }
                        let step2 = charged(Message::SyncStep2(update.into()).encode());
                        if sv.is_empty() {
                            state.whole_step2 = Some(step2.clone());
                        }
                        step2
                    }
                };
                if let Some(m) = state.members.get_mut(&member) {
                    m.queue.push(step2);
                    m.has_document = true;
                }
            }
            Message::SyncStep2(update) | Message::Update(update) => {
                if update.as_ref() == crate::protocol::EMPTY_UPDATE {
                    return Ok(());
                }
                let mut state = self.lock();
                // Checked under the lock that applies: once a member is closed or made
                // read-only, no update of its is applied.
                // A read-only member was told so when it joined or was made read-only.
                let entry = state.members.get(&member).ok_or(RoomError::NotAMember)?;
                if entry.access == Access::ReadOnly {
                    return Ok(());
                }
                // Room for the frame that relays it, before anything is applied.
                if !fits_memory(update.len()) {
                    return Err(over_budget());
                }
                match self.apply(&mut state, member, &update)? {
                    Relay::Nothing => {}
                    Relay::AsSent(update) => {
                        broadcast(
                            &state,
                            Some(member),
                            charged(Message::Update(update).encode()),
                        );
                    }
                    Relay::Integrated(update) => {
                        if update.as_ref() != crate::protocol::EMPTY_UPDATE {
                            broadcast(&state, None, charged(Message::Update(update).encode()));
                        }
                    }
                }
            }
            Message::Awareness(payload) => {
                let mut state = self.lock();
                if !state.awareness_allowed(member)? {
                    return Ok(()); // dropped: the next state within the rate carries the news
                }
                // Room for the frame that relays it, before anything is applied.
                if !fits_memory(payload.len()) {
                    return Err(over_budget());
                }
                let limits = state.limits.awareness();
                if let Some(relay) = state.awareness.apply(member, &payload, &limits)? {
                    // Sent back to its sender too: a y-websocket client that hears nothing for
                    // 30 s drops its connection, and alone in a room the echo of its own
                    // 15-second awareness renewal is all it hears (the reference server
                    // echoes awareness the same way).
                    broadcast_awareness(&state, charged(Message::Awareness(relay).encode()));
                }
            }
            Message::QueryAwareness => {
                let mut state = self.lock();
                if !state.awareness_allowed(member)? {
                    return Ok(());
                }
                if let Some(snapshot) = state.awareness.snapshot_frame() {
                    if let Some(entry) = state.members.get(&member) {
                        entry.queue.push(snapshot);
                    }
                }
            }
            // Auth is for the server to send; unknown types are ignored (y-protocols' rule).
            Message::Auth { .. } | Message::Unknown(_) => {}
        }
        Ok(())
    }

    /// Applies a member's update through the guard and returns what to relay.
    ///
    /// Content waiting for missing predecessors ("pending") is where yrs goes wrong on hostile
    /// bytes: merging it into an encode can panic, and integrating structs that start beyond
    /// the document's clock (behind a Skip) frees blocks yrs still points to. So an update
    /// that does not follow on from the document waits in the room, outside yrs, until the
    /// document has caught up (a y-websocket client that reconnects with offline edits sends
    /// one before its sync step 2), and the room never sends pending content to anyone: an
    /// update that integrates cleanly is relayed as it came; otherwise what the document
    /// integrated is re-encoded. A panic while applying rebuilds the document from its
    /// integrated content and refuses the update.
    fn apply(
        &self,
        state: &mut RoomState,
        member: MemberId,
        update: &Bytes,
    ) -> Result<Relay, RoomError> {
        let limits = state.limits;
        let checked = guard::check_update(update, &limits.guard)?;
        let items = (state.document_cost / budget::STRUCT_COST) as u64;
        // Ordinary edits insert a few items at any one position: only an update of a thousand
        // or more at one (never seen from an editor) is weighed.
        let siblings = checked.report.siblings;
        if siblings > 1_000 && siblings.saturating_mul(items) > limits.max_conflict_work {
            return Err(RoomError::TooCostly { siblings, items });
        }
        let cost = budget::document_cost(update.len(), &checked.report);
        let (pending_before, sv_before) = {
            let txn = state.doc.transact();
            (txn.has_missing_updates(), txn.state_vector())
        };
        if !guard::fits(&checked.report, &sv_before) {
            if state.waiting.member_bytes(member) + update.len() > limits.max_waiting_bytes {
                return Err(RoomError::TooFarAhead {
                    limit: limits.max_waiting_bytes,
                });
            }
            state.charge_document(&self.id, cost)?;
            let report = checked.report;
            state
                .waiting
                .insert(member, update.clone(), report, cost, &sv_before);
            return Ok(Relay::Nothing);
        }
        state.charge_document(&self.id, cost)?;
        // Whatever happens below may change the document.
        state.changed();
        let pending_after = match self.apply_checked(state, &checked) {
            Ok(pending) => pending,
            Err(error) => {
                state.release_document(cost);
                return Err(error.into());
            }
        };
        let clients = checked.report.clients.iter().map(|c| c.client);
        let caught_up = self.apply_waiting(state, clients);
        if !pending_before && !pending_after && !caught_up {
            return Ok(Relay::AsSent(update.clone()));
        }
        Ok(Relay::Integrated(state.encode(&self.id, &sv_before).into()))
    }

    fn apply_checked(
        &self,
        state: &mut RoomState,
        update: &guard::Checked<'_>,
    ) -> Result<bool, GuardError> {
        guard::apply_checked(&state.doc, update).inspect_err(|error| {
            if matches!(error, GuardError::Panicked(_)) {
                tracing::warn!(room = %Clipped(&self.id), "an update broke the document; rebuilding it");
                state.doc = guard::rebuild(&state.doc, None, &state.limits.guard);
            }
        })
    }

    /// Applies the waiting updates that integrating structs of `clients` unblocked, and those
    /// they unblock in turn; returns whether any was applied.
    fn apply_waiting(&self, state: &mut RoomState, clients: impl Iterator<Item = u64>) -> bool {
        if state.waiting.is_empty() {
            return false;
        }
        let sv = state.doc.transact().state_vector();
        state.waiting.advanced(clients, &sv);
        let mut applied = false;
        while let Some(waiting) = state.waiting.pop_ready() {
            let checked = guard::Checked {
                bytes: &waiting.update,
                report: waiting.report,
            };
            match self.apply_checked(state, &checked) {
                Ok(_) => {
                    applied = true;
                    let sv = state.doc.transact().state_vector();
                    let clients = checked.report.clients.iter().map(|c| c.client);
                    state.waiting.advanced(clients, &sv);
                }
                Err(error) => {
                    tracing::warn!(room = %Clipped(&self.id), member = waiting.member, %error, "a waiting update was refused");
                    state.release_document(waiting.cost);
                }
            }
        }
        applied
    }

    /// What a member whose queue overflowed is sent instead of what it missed: the whole
    /// document (applying it again is harmless) and every awareness state. Encoded once for
    /// every member that overflows before the document changes.
    pub fn resync_frames(&self) -> Vec<Bytes> {
        let mut state = self.lock();
        let update = match &state.whole_update {
            Some(update) => update.clone(),
            None => {
                let update = state.encode(&self.id, &StateVector::default());
                let frame = charged(Message::Update(update.into()).encode());
                state.whole_update = Some(frame.clone());
                frame
            }
        };
        let mut frames = vec![update];
        if let Some(snapshot) = state.awareness.snapshot_frame() {
            frames.push(snapshot);
        }
        frames
    }

    /// The whole document as one v1 update.
    pub fn encode_state_as_update(&self) -> Vec<u8> {
        self.lock().encode(&self.id, &StateVector::default())
    }

    /// What the room has that a peer with `state_vector` lacks, as one v1 update.
    pub fn encode_diff(&self, state_vector: &StateVector) -> Vec<u8> {
        self.lock().encode(&self.id, state_vector)
    }

    pub fn state_vector(&self) -> Vec<u8> {
        self.lock().doc.transact().state_vector().encode_v1()
    }

    /// What the document and its waiting updates are counted as, in bytes of memory.
    pub fn document_cost(&self) -> usize {
        self.lock().document_cost
    }
}

/// A y-protocols permission-denied message saying the member is read-only.
fn read_only_notice() -> Bytes {
    Message::Auth {
        kind: crate::protocol::AUTH_PERMISSION_DENIED,
        reason: Bytes::from_static(READ_ONLY_REASON.as_bytes()),
    }
    .encode()
}

fn peers(state: &RoomState) -> usize {
    state
        .members
        .values()
        .filter(|m| m.kind == JoinKind::Peer)
        .count()
}

/// What a member that is gone leaves behind: its awareness states (removed for the others)
/// and its waiting updates (it still holds them and sends them again when it comes back).
fn remove_member(state: &mut RoomState, member: MemberId) {
    if let Some(removal) = state.awareness.remove_member(member) {
        broadcast_awareness(state, Message::Awareness(removal).encode());
    }
    let freed = state.waiting.remove_member(member);
    state.release_document(freed);
}

/// Awareness goes to every peer, the sender included, and to no mirror: a mirror is a document
/// (`Room.doc`, a store) that has no use for cursors, and would wake Python for each of them.
fn broadcast_awareness(state: &RoomState, frame: Bytes) {
    for (id, member) in &state.members {
        if member.kind == JoinKind::Peer && member.queue.push(frame.clone()) == Pushed::Overflowed {
            tracing::debug!(
                member = id,
                "member queue overflowed; it will be resynchronised"
            );
        }
    }
}

/// Queues `frame` for every member that has the document, but `sender`.
fn broadcast(state: &RoomState, sender: Option<MemberId>, frame: Bytes) {
    for (id, member) in &state.members {
        if Some(*id) != sender
            && member.has_document
            && member.queue.push(frame.clone()) == Pushed::Overflowed
        {
            tracing::debug!(
                member = id,
                "member queue overflowed; it will be resynchronised"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decode_frame;
    use crate::queue::QueueLimits;
    use crate::wake::Waker;
    use tokio::sync::Notify;
    use yrs::{GetString, Text};

    fn queue() -> Arc<FrameQueue> {
        Arc::new(FrameQueue::new(
            QueueLimits::default(),
            Waker::Tokio(Arc::new(Notify::new())),
        ))
    }

    fn messages(queue: &FrameQueue) -> Vec<Message> {
        queue
            .drain()
            .frames
            .iter()
            .flat_map(|f| decode_frame(f).unwrap())
            .collect()
    }

    /// A peer that has joined and been sent the document (its step 1 answered), its queue
    /// drained: from now on it gets live updates.
    fn synced_peer(room: &RoomCore, queue: &Arc<FrameQueue>) -> MemberId {
        synced_peer_as(room, queue, Access::ReadWrite)
    }

    fn synced_peer_as(room: &RoomCore, queue: &Arc<FrameQueue>, access: Access) -> MemberId {
        let member = room.join_as(queue.clone(), JoinKind::Peer, access);
        room.handle(member, Message::SyncStep1(Bytes::from_static(&[0])))
            .unwrap();
        queue.drain();
        member
    }

    fn edit(text: &str) -> Bytes {
        let doc = Doc::new();
        let t = doc.get_or_insert_text("text");
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, 0, text);
        txn.encode_update_v1().into()
    }

    /// `n` one-character edits of one client, each its own update: prepends (each a struct
    /// of its own in the document) or appends (merged by yrs into one).
    fn typed(n: usize, prepend: bool) -> Vec<Bytes> {
        let doc = Doc::with_client_id(7);
        let t = doc.get_or_insert_text("text");
        (0..n)
            .map(|i| {
                let mut txn = doc.transact_mut();
                t.insert(&mut txn, if prepend { 0 } else { i as u32 }, "a");
                txn.encode_update_v1().into()
            })
            .collect()
    }

    #[test]
    fn the_quota_counts_what_a_document_costs_in_memory_not_its_bytes() {
        let limits = RoomLimits {
            max_document_bytes: 1 << 20,
            ..RoomLimits::default()
        };
        // 10,000 prepends in one update: about 70 KB on the wire, 2 MB in a yrs document.
        let doc = Doc::with_client_id(7);
        let t = doc.get_or_insert_text("text");
        let mut txn = doc.transact_mut();
        for _ in 0..10_000 {
            t.insert(&mut txn, 0, "a");
        }
        let prepends: Bytes = txn.encode_update_v1().into();
        drop(txn);
        assert!(prepends.len() < 100_000);
        let room = RoomCore::new("r", limits);
        let member = synced_peer(&room, &queue());
        assert!(matches!(
            room.handle(member, Message::Update(prepends)),
            Err(RoomError::Quota { .. })
        ));
        assert_eq!(room.document_cost(), 0);
    }

    #[test]
    fn typing_is_measured_before_it_is_refused() {
        // 20,000 keystrokes are estimated at 4 MB, but yrs merges them into one item: the
        // room measures the document when the estimate passes the quota, and takes them all.
        let limits = RoomLimits {
            max_document_bytes: 1 << 20,
            ..RoomLimits::default()
        };
        let room = RoomCore::new("r", limits);
        let member = synced_peer(&room, &queue());
        for update in typed(20_000, false) {
            room.handle(member, Message::Update(update)).unwrap();
        }
        assert_eq!(text_of(&room.encode_state_as_update()).len(), 20_000);
        assert!(room.document_cost() <= 1 << 20);
        // Prepends are as costly as estimated: refused once past the quota.
        let room = RoomCore::new("r", limits);
        let member = synced_peer(&room, &queue());
        let refused = typed(20_000, true)
            .into_iter()
            .map(|u| room.handle(member, Message::Update(u)))
            .position(|r| matches!(r, Err(RoomError::Quota { .. })));
        assert!(refused.is_some_and(|at| at < 10_000), "{refused:?}");
    }

    /// `n` prepends of client `client`, in one update.
    fn prepends(client: u64, n: usize) -> Bytes {
        let doc = Doc::with_client_id(client);
        let t = doc.get_or_insert_text("text");
        let mut txn = doc.transact_mut();
        for _ in 0..n {
            t.insert(&mut txn, 0, "a");
        }
        txn.encode_update_v1().into()
    }

    #[test]
    fn an_update_too_costly_to_integrate_is_refused_before_it_is_applied() {
        let room = RoomCore::new("r", RoomLimits::default());
        let member = synced_peer(&room, &queue());
        // Into an empty document, 15,000 items at one position cost nothing to place.
        room.handle(member, Message::Update(prepends(1, 15_000)))
            .unwrap();
        // The same from another client meets every one of them: refused up front.
        let other = synced_peer(&room, &queue());
        assert!(matches!(
            room.handle(other, Message::Update(prepends(2, 15_000))),
            Err(RoomError::TooCostly {
                siblings: 14_999,
                ..
            })
        ));
        // A few hundred at a time is fine.
        room.handle(other, Message::Update(prepends(3, 500)))
            .unwrap();
        assert_eq!(text_of(&room.encode_state_as_update()).len(), 15_500);
    }

    #[test]
    fn requests_that_cost_an_encode_are_answered_once_per_frame() {
        let room = RoomCore::new("r", RoomLimits::default());
        let q = queue();
        let member = synced_peer(&room, &q);
        room.handle(
            member,
            Message::Awareness(crate::awareness::encode_update([(5, 1, &b"{}"[..])])),
        )
        .unwrap();
        q.drain();
        let mut frame = Vec::new();
        for _ in 0..1000 {
            frame.extend_from_slice(&Message::QueryAwareness.encode());
            frame.extend_from_slice(&Message::SyncStep1(Bytes::from_static(&[0])).encode());
        }
        room.handle_frame(member, &Bytes::from(frame)).unwrap();
        let answers = messages(&q);
        assert_eq!(answers.len(), 2, "{answers:?}");
        assert!(matches!(answers[0], Message::SyncStep2(_)));
        assert!(matches!(answers[1], Message::Awareness(_)));
    }

    #[test]
    fn a_member_that_keeps_the_room_busy_is_refused() {
        let limits = RoomLimits {
            member_work: WorkLimits {
                rate: 0.0,
                burst: Duration::from_millis(20),
            },
            ..RoomLimits::default()
        };
        let room = RoomCore::new("r", limits);
        let member = synced_peer(&room, &queue());
        let refused = typed(200_000, true)
            .chunks(500)
            .map(|updates| {
                let mut frame = Vec::new();
                for update in updates {
                    frame.extend_from_slice(&Message::Update(update.clone()).encode());
                }
                room.handle_frame(member, &Bytes::from(frame))
            })
            .position(|r| matches!(r, Err(RoomError::TooMuchWork)));
        assert!(refused.is_some(), "never refused");
        // Another member is served as before.
        let other = synced_peer(&room, &queue());
        room.handle_frame(other, &Message::Update(edit("x")).encode())
            .unwrap();
    }

    #[test]
    fn a_joiner_gets_step1_and_answers_are_step2() {
        let room = RoomCore::new("r", RoomLimits::default());
        let q = queue();
        let m = room.join(q.clone(), JoinKind::Peer);
        assert!(matches!(messages(&q)[..], [Message::SyncStep1(_)]));
        room.handle(m, Message::SyncStep1(Bytes::from_static(&[0])))
            .unwrap();
        assert!(matches!(messages(&q)[..], [Message::SyncStep2(_)]));
    }

    #[test]
    fn a_failed_room_closes_its_peers_now_and_later_ones_on_join() {
        let room = RoomCore::new("r", RoomLimits::default());
        let (a, mirror, late) = (queue(), queue(), queue());
        let member = synced_peer(&room, &a);
        room.join(mirror.clone(), JoinKind::Mirror);
        let failed = CloseReason::new(1011, "room failed");
        assert_eq!(room.close_peers(failed.clone()), 1);
        assert_eq!(a.drain().closed, Some(failed.clone()));
        assert!(matches!(
            room.handle(member, Message::Update(edit("x"))),
            Err(RoomError::NotAMember)
        ));
        // The mirror belongs to the room's owner, who closes it.
        assert!(!mirror.is_closed());
        room.join(late.clone(), JoinKind::Peer);
        assert_eq!(late.drain().closed, Some(failed));
        assert_eq!(room.peer_count(), 0);
    }

    #[test]
    fn updates_reach_every_other_member_once_and_never_the_sender() {
        let room = RoomCore::new("r", RoomLimits::default());
        let queues: Vec<_> = (0..3).map(|_| queue()).collect();
        let ids: Vec<_> = queues.iter().map(|q| synced_peer(&room, q)).collect();
        let update = edit("hello");
        room.handle(ids[0], Message::Update(update.clone()))
            .unwrap();
        assert!(messages(&queues[0]).is_empty());
        for q in &queues[1..] {
            assert_eq!(messages(q), vec![Message::Update(update.clone())]);
        }
        let doc = Doc::new();
        let text = doc.get_or_insert_text("text");
        guard::apply_update(
            &doc,
            &room.encode_state_as_update(),
            &GuardLimits::default(),
        )
        .unwrap();
        assert_eq!(text.get_string(&doc.transact()), "hello");
    }

    #[test]
    fn a_peer_gets_live_updates_once_it_has_been_sent_the_document() {
        let room = RoomCore::new("r", RoomLimits::default());
        let (qa, qb) = (queue(), queue());
        let a = synced_peer(&room, &qa);
        let b = room.join(qb.clone(), JoinKind::Peer);
        qb.drain();
        // Before its step 1 is answered, b is sent nothing: what it would miss is in that
        // answer, and a live update could start beyond what b has.
        room.handle(a, Message::Update(edit("before"))).unwrap();
        assert!(messages(&qb).is_empty());
        room.handle(b, Message::SyncStep1(Bytes::from_static(&[0])))
            .unwrap();
        let [Message::SyncStep2(step2)] = &messages(&qb)[..] else {
            panic!("not a step 2");
        };
        assert_eq!(text_of(step2), "before");
        let after = edit("after");
        room.handle(a, Message::Update(after.clone())).unwrap();
        assert_eq!(messages(&qb), vec![Message::Update(after)]);
    }

    #[test]
    fn joiners_with_new_documents_share_one_step2_until_the_document_changes() {
        let room = RoomCore::new("r", RoomLimits::default());
        let qa = queue();
        let a = room.join(qa, JoinKind::Peer);
        room.handle(a, Message::Update(edit("x"))).unwrap();
        let step2 = |room: &RoomCore| {
            let q = queue();
            let m = room.join(q.clone(), JoinKind::Peer);
            q.drain();
            room.handle(m, Message::SyncStep1(Bytes::from_static(&[0])))
                .unwrap();
            q.drain().frames.remove(0)
        };
        let (first, second) = (step2(&room), step2(&room));
        assert_eq!(first.as_ptr(), second.as_ptr(), "encoded once, shared");
        room.handle(a, Message::Update(edit("y"))).unwrap();
        let third = step2(&room);
        let [Message::SyncStep2(update)] = &decode_frame(&third).unwrap()[..] else {
            panic!("not a step 2");
        };
        let doc = Doc::new();
        let text = doc.get_or_insert_text("text");
        guard::apply_update(&doc, update, &GuardLimits::default()).unwrap();
        assert_eq!(
            text.get_string(&doc.transact()).len(),
            2,
            "the new edit is in"
        );
    }

    /// Successive edits of one client: each update starts where the one before ended.
    fn edits_in_turn(texts: &[&str]) -> Vec<Bytes> {
        let doc = Doc::new();
        let t = doc.get_or_insert_text("text");
        texts
            .iter()
            .map(|text| {
                let mut txn = doc.transact_mut();
                let len = t.len(&txn);
                t.insert(&mut txn, len, text);
                txn.encode_update_v1().into()
            })
            .collect()
    }

    fn text_of(update: &[u8]) -> String {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("text");
        guard::apply_update(&doc, update, &GuardLimits::default()).unwrap();
        let txn = doc.transact();
        text.get_string(&txn)
    }

    #[test]
    fn an_update_ahead_of_the_document_waits_until_it_has_caught_up() {
        let room = RoomCore::new("r", RoomLimits::default());
        let (qa, qb, qc) = (queue(), queue(), queue());
        let a = synced_peer(&room, &qa);
        let b = synced_peer(&room, &qb);
        synced_peer(&room, &qc);
        let updates = edits_in_turn(&["one ", "two ", "three"]);
        // A client back with offline edits types before its sync step 2: the room lacks the
        // first edit, so the later ones wait, and nobody is sent what they cannot integrate.
        room.handle(a, Message::Update(updates[2].clone())).unwrap();
        room.handle(a, Message::Update(updates[1].clone())).unwrap();
        assert!(messages(&qb).is_empty() && messages(&qc).is_empty());
        assert_eq!(text_of(&room.encode_state_as_update()), "");
        // The first edit arrives (from another member, which lacks the rest too).
        room.handle(b, Message::Update(updates[0].clone())).unwrap();
        assert_eq!(text_of(&room.encode_state_as_update()), "one two three");
        for q in [&qa, &qb, &qc] {
            let got: String = messages(q)
                .iter()
                .map(|m| match m {
                    Message::Update(u) => text_of(u),
                    other => panic!("unexpected {other:?}"),
                })
                .collect();
            assert_eq!(got, "one two three", "each member gets it all, once");
        }
    }

    #[test]
    fn waiting_updates_are_bounded_per_member_and_dropped_when_it_leaves() {
        let updates = edits_in_turn(&["one ", "two ", "three"]);
        let limits = RoomLimits {
            max_waiting_bytes: updates[1].len() + updates[2].len() - 1,
            ..RoomLimits::default()
        };
        let room = RoomCore::new("r", limits);
        let (a, b) = (
            room.join(queue(), JoinKind::Peer),
            room.join(queue(), JoinKind::Peer),
        );
        room.handle(a, Message::Update(updates[1].clone())).unwrap();
        assert!(matches!(
            room.handle(a, Message::Update(updates[2].clone())),
            Err(RoomError::TooFarAhead { .. })
        ));
        // The limit is per member: another one may still wait.
        room.handle(b, Message::Update(updates[2].clone())).unwrap();
        room.leave(a);
        room.leave(b);
        let c = room.join(queue(), JoinKind::Peer);
        room.handle(c, Message::Update(updates[0].clone())).unwrap();
        assert_eq!(
            text_of(&room.encode_state_as_update()),
            "one ",
            "what waited for members that left is gone with them"
        );
    }

    #[test]
    fn a_bad_update_is_an_error_and_nothing_is_broadcast() {
        let room = RoomCore::new("r", RoomLimits::default());
        let (qa, qb) = (queue(), queue());
        let a = room.join(qa, JoinKind::Peer);
        room.join(qb.clone(), JoinKind::Peer);
        qb.drain();
        assert!(room
            .handle(a, Message::Update(Bytes::from_static(&[1, 2, 3])))
            .is_err());
        assert!(messages(&qb).is_empty());
    }

    #[test]
    fn awareness_is_relayed_sent_to_joiners_and_removed_on_leave() {
        let room = RoomCore::new("r", RoomLimits::default());
        let (qa, qb, qm) = (queue(), queue(), queue());
        let a = room.join(qa.clone(), JoinKind::Peer);
        let b = room.join(qb.clone(), JoinKind::Peer);
        room.join(qm.clone(), JoinKind::Mirror);
        qa.drain();
        qb.drain();
        qm.drain();
        let state = crate::awareness::encode_update([(7, 1, &b"{\"x\":1}"[..])]);
        room.handle(a, Message::Awareness(state.clone())).unwrap();
        assert_eq!(messages(&qb), vec![Message::Awareness(state.clone())]);
        // Echoed to its sender (y-websocket's liveness check), never sent to a mirror.
        assert_eq!(messages(&qa), vec![Message::Awareness(state.clone())]);
        assert!(messages(&qm).is_empty());

        let qc = queue();
        room.join(qc.clone(), JoinKind::Peer);
        assert!(messages(&qc).contains(&Message::Awareness(state)));

        assert_eq!(room.leave(a), 2);
        let removal = crate::awareness::encode_update([(7, 1, &b"null"[..])]);
        assert_eq!(messages(&qb), vec![Message::Awareness(removal)]);
        assert_eq!(room.leave(b), 1);
    }

    #[test]
    fn a_read_only_member_is_told_gets_updates_and_changes_nothing() {
        let room = RoomCore::new("r", RoomLimits::default());
        let (qw, qr) = (queue(), queue());
        let writer = synced_peer(&room, &qw);
        let reader = room.join_as(qr.clone(), JoinKind::Peer, Access::ReadOnly);
        let joined = messages(&qr);
        assert!(matches!(joined[0], Message::SyncStep1(_)));
        assert_eq!(
            joined[1],
            Message::Auth {
                kind: 0,
                reason: Bytes::from_static(b"read-only")
            }
        );
        room.handle(reader, Message::SyncStep1(Bytes::from_static(&[0])))
            .unwrap();
        assert!(matches!(messages(&qr)[..], [Message::SyncStep2(_)]));
        let before = room.encode_state_as_update();
        for i in 0..100 {
            room.handle(reader, Message::Update(edit(&i.to_string())))
                .unwrap();
            room.handle(reader, Message::SyncStep2(edit("x"))).unwrap();
        }
        assert_eq!(room.encode_state_as_update(), before);
        assert!(messages(&qw).is_empty());
        assert!(messages(&qr).is_empty(), "told once, not per update");
        // It still gets live updates, and its awareness is relayed.
        let update = edit("live");
        room.handle(writer, Message::Update(update.clone()))
            .unwrap();
        assert_eq!(messages(&qr), vec![Message::Update(update)]);
        let state = crate::awareness::encode_update([(9, 1, &b"{}"[..])]);
        room.handle(reader, Message::Awareness(state.clone()))
            .unwrap();
        assert_eq!(messages(&qw), vec![Message::Awareness(state)]);
        assert_eq!(room.access(reader), Some(Access::ReadOnly));

        // Made read-write again: asked for what the room dropped, which then gets in.
        qr.drain();
        assert!(room.set_access(reader, Access::ReadWrite));
        let asked = messages(&qr);
        let [Message::SyncStep1(sv)] = &asked[..] else {
            panic!("expected a sync step 1, got {asked:?}");
        };
        assert_eq!(sv.as_ref(), &room.state_vector()[..]);
        room.handle(reader, Message::SyncStep2(edit("dropped, then sent again")))
            .unwrap();
        let doc = Doc::new();
        let text = doc.get_or_insert_text("text");
        guard::apply_update(
            &doc,
            &room.encode_state_as_update(),
            &GuardLimits::default(),
        )
        .unwrap();
        assert!(text
            .get_string(&doc.transact())
            .contains("dropped, then sent again"));
    }

    #[test]
    fn a_closed_member_is_gone_with_its_awareness() {
        let room = RoomCore::new("r", RoomLimits::default());
        let (qa, qb) = (queue(), queue());
        let a = room.join(qa.clone(), JoinKind::Peer);
        room.join(qb.clone(), JoinKind::Peer);
        let state = crate::awareness::encode_update([(7, 1, &b"{}"[..])]);
        room.handle(a, Message::Awareness(state)).unwrap();
        qb.drain();
        assert!(room.close_member(a, CloseReason::new(4000, "kicked")));
        assert!(!room.close_member(a, CloseReason::new(4000, "kicked")));
        let removal = crate::awareness::encode_update([(7, 1, &b"null"[..])]);
        assert_eq!(messages(&qb), vec![Message::Awareness(removal)]);
        assert!(matches!(
            room.handle(a, Message::Update(edit("late"))),
            Err(RoomError::NotAMember)
        ));
        assert_eq!(qa.drain().closed, Some(CloseReason::new(4000, "kicked")));
        assert_eq!(room.peer_count(), 1);
    }

    #[test]
    fn mirrors_get_the_whole_document_and_do_not_count_as_peers() {
        let room = RoomCore::new("r", RoomLimits::default());
        let qa = queue();
        let a = room.join(qa, JoinKind::Peer);
        room.handle(a, Message::Update(edit("x"))).unwrap();
        let qm = queue();
        room.join(qm.clone(), JoinKind::Mirror);
        assert!(matches!(&messages(&qm)[..], [Message::SyncStep2(u)] if u.len() > 2));
        assert_eq!(room.peer_count(), 1);
    }

    #[test]
    fn an_overflowed_member_is_resynchronised_with_everything() {
        let room = RoomCore::new("r", RoomLimits::default());
        let qa = queue();
        let a = room.join(qa, JoinKind::Peer);
        let small = Arc::new(FrameQueue::new(
            QueueLimits {
                max_frames: 2,
                max_bytes: 1 << 20,
            },
            Waker::Tokio(Arc::new(Notify::new())),
        ));
        synced_peer(&room, &small);
        for i in 0..5 {
            room.handle(a, Message::Update(edit(&i.to_string())))
                .unwrap();
        }
        assert!(small.drain().overflowed);
        let frames = room.resync_frames();
        assert!(matches!(
            &decode_frame(&frames[0]).unwrap()[..],
            [Message::Update(_)]
        ));
    }

    fn hex(s: &str) -> Bytes {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect::<Vec<_>>()
            .into()
    }

    /// The repros of yrs 0.28.1 on untrusted bytes: each is refused, only its sender is at
    /// fault, and the room still serves a joiner the content it had.
    #[test]
    fn hostile_updates_are_refused_and_the_room_keeps_serving() {
        let nested: Bytes = {
            let doc = Doc::new();
            let array = doc.get_or_insert_array("a");
            let mut any = yrs::Any::Null;
            for _ in 0..10 {
                any = yrs::Any::Array(vec![any].into());
            }
            yrs::Array::push_back(&array, &mut doc.transact_mut(), any);
            let update = doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default());
            let pos = update.windows(2).position(|w| w == [0x75, 0x01]).unwrap();
            let mut bomb = update[..pos].to_vec();
            for _ in 0..10_000 {
                bomb.extend_from_slice(&[0x75, 0x01]);
            }
            bomb.extend_from_slice(&update[pos + 20..]);
            bomb.into()
        };
        let hostile = [
            // Accepted by apply_update, after which every state encode panics.
            hex("01030101020c4400000568656c6c6f8801050175037c3fc000007701737e2801016d026b31017c3f8000000101010102"),
            // Panics inside apply_update.
            hex("010101ffffffffbf03010101013201010301810100000001001800c4ff"),
            // 10,000 nested arrays: overflows a thread's stack in yrs' decoder.
            nested,
        ];
        let room = RoomCore::new("r", RoomLimits::default());
        let (qa, qb) = (queue(), queue());
        let a = room.join(qa, JoinKind::Peer);
        let b = room.join(qb.clone(), JoinKind::Peer);
        room.handle(a, Message::Update(edit("kept"))).unwrap();
        qb.drain();
        let results: Vec<_> = hostile
            .into_iter()
            .map(|update| {
                room.handle(b, Message::Update(update))
                    .map_err(|e| e.to_string())
            })
            .collect();
        // The poisoning update only adds pending content, which the room never sends on.
        assert!(results[1].is_err(), "{results:?}");
        assert!(
            matches!(&results[2], Err(e) if e.contains("nesting deeper")),
            "{results:?}"
        );
        // A lying state vector (8 bytes declaring a huge count) costs nothing.
        assert!(room
            .handle(b, Message::SyncStep1(hex("8080808001")))
            .is_err());
        // Nothing reached the other member, and a joiner gets the sound document.
        assert!(messages(&qb).is_empty());
        let qc = queue();
        let c = room.join(qc.clone(), JoinKind::Peer);
        room.handle(c, Message::SyncStep1(Bytes::from_static(&[0])))
            .unwrap();
        let step2 = messages(&qc)
            .into_iter()
            .find_map(|m| match m {
                Message::SyncStep2(u) => Some(u),
                _ => None,
            })
            .unwrap();
        let doc = Doc::new();
        let text = doc.get_or_insert_text("text");
        guard::apply_update(&doc, &step2, &GuardLimits::default()).unwrap();
        assert_eq!(text.get_string(&doc.transact()), "kept");
        assert!(room.resync_frames().len() == 1);
    }
}
