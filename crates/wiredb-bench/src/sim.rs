//! Simulated y-websocket clients: each has its own yrs document, syncs with the server (step 1 /
//! step 2), makes edits to a shared text and records when every other client received them.
//!
//! Everything runs on one thread (a current-thread runtime and a `LocalSet`), so the shared
//! bookkeeping is `Rc<RefCell<..>>` and no lock is taken per message.
//!
//! An edit is identified by its author's client id and clock: every edit inserts exactly
//! [`EDIT_LEN`] characters, so edit `k` of a client starts at clock `k * EDIT_LEN`. An arriving
//! update's clocks (from the structural scan, or from yrs when the scan cannot tell) say which edits
//! it carries, whatever the server did to it (relayed as is, re-encoded, merged).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ops::Range;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use wiredb_core::protocol::{decode_frame, Message};
use wiredb_core::scan::{scan_update_v1, ScanLimits};

use crate::wire::{self, Incoming};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, GetString, ReadTxn, StateVector, Text, TextRef, Transact, Update};

/// Characters (and so clock units) inserted by one edit.
pub const EDIT_LEN: u32 = 4;

/// Edits land among the text's first this many characters.
pub const EDIT_SPAN: u32 = 64;

/// Name of the shared text in every document.
pub const TEXT: &str = "text";

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot connect to {url}: {error}")]
    Connect { url: String, error: String },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("not converged: {0}")]
    Diverged(String),
}

struct EditRecord {
    sent: Instant,
    /// Receivers that have not got it yet.
    remaining: u32,
}

/// The bookkeeping of a run, shared by all its clients: who sent what when, who got what.
pub struct Ledger {
    /// Edits by client index, then edit index. Clients that are not tracked have none.
    edits: Vec<Vec<EditRecord>>,
    /// Edits of each client not yet received by every other member of its room.
    inflight: Vec<u32>,
    wake: Vec<Rc<Notify>>,
    /// Latency of every delivery, in microseconds.
    pub latencies_us: Vec<u32>,
    pub deliveries: u64,
    /// Deliveries still expected.
    outstanding: u64,
    pub last_arrival: Option<Instant>,
    drained: Rc<Notify>,
}

impl Ledger {
    pub fn new() -> Rc<RefCell<Ledger>> {
        Rc::new(RefCell::new(Ledger {
            edits: Vec::new(),
            inflight: Vec::new(),
            wake: Vec::new(),
            latencies_us: Vec::new(),
            deliveries: 0,
            outstanding: 0,
            last_arrival: None,
            drained: Rc::new(Notify::new()),
        }))
    }

    fn clients(&self) -> usize {
        self.edits.len()
    }

    fn register(&mut self) -> (usize, Rc<Notify>) {
        let wake = Rc::new(Notify::new());
        self.edits.push(Vec::new());
        self.inflight.push(0);
        self.wake.push(wake.clone());
        (self.edits.len() - 1, wake)
    }

    fn record_edit(&mut self, author: usize, receivers: u32, sent: Instant) {
        self.edits[author].push(EditRecord {
            sent,
            remaining: receivers,
        });
        if receivers > 0 {
            self.inflight[author] += 1;
            self.outstanding += u64::from(receivers);
        }
    }

    /// A receiver integrated clocks `lo..hi` of a client: every tracked edit in that range that
    /// it had not seen yet is delivered now.
    fn arrived(&mut self, seen: &mut u32, author: usize, lo: u32, hi: u32, now: Instant) {
        let Some(edits) = self.edits.get_mut(author) else {
            return;
        };
        let first = (lo / EDIT_LEN).max(*seen);
        let end = hi.div_ceil(EDIT_LEN).min(edits.len() as u32);
        for index in first..end {
            let edit = &mut edits[index as usize];
            if edit.remaining == 0 {
                continue;
            }
            let latency = now.saturating_duration_since(edit.sent).as_micros();
            self.latencies_us
                .push(u32::try_from(latency).unwrap_or(u32::MAX));
            edit.remaining -= 1;
            self.deliveries += 1;
            self.outstanding -= 1;
            if edit.remaining == 0 {
                self.inflight[author] -= 1;
                self.wake[author].notify_one();
            }
        }
        *seen = (*seen).max(end);
        self.last_arrival = Some(now);
        if self.outstanding == 0 {
            self.drained.notify_waiters();
        }
    }
}

/// Waits until every recorded edit reached every receiver.
pub async fn drained(ledger: &Rc<RefCell<Ledger>>, limit: Duration) -> Result<(), SimError> {
    let wait = async {
        loop {
            let notify = ledger.borrow().drained.clone();
            let notified = notify.notified();
            if ledger.borrow().outstanding == 0 {
                return;
            }
            notified.await;
        }
    };
    tokio::time::timeout(limit, wait).await.map_err(|_| {
        SimError::Timeout(format!(
            "{} deliveries still missing after {limit:?}",
            ledger.borrow().outstanding
        ))
    })
}

/// How a simulated client edits and takes in the others' edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behaviour {
    /// Apply received updates only at the end (to keep the load generator cheap under
    /// saturation); arrivals are still timed when they come.
    pub defer: bool,
    pub edit_at: EditAt,
}

impl Behaviour {
    /// Applies what it receives at once; edits at random places.
    pub const LIVE: Behaviour = Behaviour {
        defer: false,
        edit_at: EditAt::Random,
    };
    /// Applies what it receives at the end; edits at random places.
    pub const DEFERRED: Behaviour = Behaviour {
        defer: true,
        edit_at: EditAt::Random,
    };
    /// Applies what it receives at the end; types at its cursor (w5).
    pub const TYPING: Behaviour = Behaviour {
        defer: true,
        edit_at: EditAt::End,
    };
}

/// Where a simulated client inserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditAt {
    /// A random place among the first [`EDIT_SPAN`] characters of the text it has.
    Random,
    /// The end of the text it has. With `defer`, that text is its own, so each edit goes right
    /// after its previous one: a user typing at a cursor.
    End,
}

/// What a client's writer sends.
enum Outgoing {
    Message(Bytes),
    Pong(Bytes),
}

/// One simulated client.
pub struct SimClient {
    /// Index in the ledger; the yrs client id is `index + 1`.
    pub index: usize,
    pub doc: Doc,
    text: TextRef,
    /// Other members of its room: each of its edits is due to all of them.
    receivers: u32,
    behaviour: Behaviour,
    deferred: RefCell<Vec<Bytes>>,
    ledger: Rc<RefCell<Ledger>>,
    wake: Rc<Notify>,
    /// Rung on every update applied and on the sync step 2.
    changed: Notify,
    synced: Cell<bool>,
    /// Edits seen so far, by author index (arrivals below are repeats).
    seen: RefCell<HashMap<usize, u32>>,
    out: RefCell<Option<mpsc::UnboundedSender<Outgoing>>>,
    closed: Cell<bool>,
    pub error: RefCell<Option<String>>,
    rng: Cell<u64>,
    pub edits_made: Cell<u32>,
    reader_done: Rc<Notify>,
}

impl SimClient {
    /// Connects and sends sync step 1. `receivers` is the number of other clients of the room.
    pub async fn connect(
        url: &str,
        receivers: u32,
        ledger: &Rc<RefCell<Ledger>>,
        behaviour: Behaviour,
    ) -> Result<Rc<SimClient>, SimError> {
        let seed = 0x9E37_79B9_7F4A_7C15 ^ (ledger.borrow().clients() as u64 + 1);
        let (mut reader, mut writer) =
            wire::connect(url, seed)
                .await
                .map_err(|error| SimError::Connect {
                    url: url.to_owned(),
                    error,
                })?;
        let (index, wake) = ledger.borrow_mut().register();
        let doc = Doc::with_client_id(index as u64 + 1);
        let text = doc.get_or_insert_text(TEXT);
        let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
        let client = Rc::new(SimClient {
            index,
            doc,
            text,
            receivers,
            behaviour,
            deferred: RefCell::new(Vec::new()),
            ledger: ledger.clone(),
            wake,
            changed: Notify::new(),
            synced: Cell::new(false),
            seen: RefCell::new(HashMap::new()),
            out: RefCell::new(Some(tx)),
            closed: Cell::new(false),
            error: RefCell::new(None),
            rng: Cell::new(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0xA24B_AED4)),
            edits_made: Cell::new(0),
            reader_done: Rc::new(Notify::new()),
        });
        // Writer: everything queued since the last write goes out in one write.
        tokio::task::spawn_local(async move {
            let mut batch = Vec::new();
            while let Some(first) = rx.recv().await {
                batch.clear();
                let mut next = Some(first);
                while let Some(outgoing) = next {
                    match outgoing {
                        Outgoing::Message(frame) => {
                            writer.frame(&mut batch, wire::OPCODE_BINARY, &frame);
                        }
                        Outgoing::Pong(payload) => {
                            writer.frame(&mut batch, wire::OPCODE_PONG, &payload);
                        }
                    }
                    next = rx.try_recv().ok();
                }
                if writer.write(&batch).await.is_err() {
                    return;
                }
            }
            batch.clear();
            writer.frame(&mut batch, wire::OPCODE_CLOSE, &[]);
            let _ = writer.write(&batch).await;
        });

        let client_reader = client.clone();
        tokio::task::spawn_local(async move {
            loop {
                match reader.next().await {
                    Ok(Some(Incoming::Binary(frame))) => client_reader.on_frame(&frame),
                    Ok(Some(Incoming::Ping(payload))) => {
                        if let Some(out) = client_reader.out.borrow().as_ref() {
                            let _ = out.send(Outgoing::Pong(payload));
                        }
                    }
                    Ok(Some(Incoming::Close) | None) => break,
                    Err(error) => {
                        client_reader.fail(format!("connection lost: {error}"));
                        break;
                    }
                }
            }
            client_reader.closed.set(true);
            client_reader.changed.notify_one();
            client_reader.reader_done.notify_one();
        });

        let sv = client.doc.transact().state_vector().encode_v1();
        client.send(Message::SyncStep1(sv.into()).encode());
        Ok(client)
    }

    fn send(&self, frame: Bytes) {
        if let Some(out) = self.out.borrow().as_ref() {
            let _ = out.send(Outgoing::Message(frame));
        }
    }

    fn fail(&self, error: String) {
        self.error.borrow_mut().get_or_insert(error);
    }

    fn on_frame(&self, frame: &Bytes) {
        let messages = match decode_frame(frame) {
            Ok(messages) => messages,
            Err(error) => return self.fail(format!("undecodable frame: {error}")),
        };
        for message in messages {
            match message {
                Message::SyncStep1(sv) => match StateVector::decode_v1(&sv) {
                    Ok(sv) => {
                        let update = self.doc.transact().encode_state_as_update_v1(&sv);
                        self.send(Message::SyncStep2(update.into()).encode());
                    }
                    Err(error) => self.fail(format!("bad state vector: {error}")),
                },
                Message::SyncStep2(update) => {
                    self.receive(update);
                    self.synced.set(true);
                    self.changed.notify_one();
                }
                Message::Update(update) => self.receive(update),
                // Awareness and auth are not part of these workloads.
                _ => {}
            }
        }
    }

    fn receive(&self, bytes: Bytes) {
        let now = Instant::now();
        if self.behaviour.defer && self.ledger.borrow().outstanding == 0 {
            // Nothing to time (a join): keep it for later, undecoded.
            self.keep(&bytes);
            return self.changed.notify_one();
        }
        // What the update carries, by author: ranges of clocks.
        let inserted = if self.behaviour.defer {
            let inserted = inserted_clocks(&bytes);
            self.keep(&bytes);
            inserted
        } else {
            Update::decode_v1(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|update| {
                    let inserted = insertions(&update);
                    self.doc
                        .transact_mut()
                        .apply_update(update)
                        .map_err(|e| format!("not applied: {e}"))?;
                    Ok(inserted)
                })
        };
        let inserted = match inserted {
            Ok(inserted) => inserted,
            Err(error) => return self.fail(format!("bad update: {error}")),
        };
        let mut ledger = self.ledger.borrow_mut();
        let mut seen = self.seen.borrow_mut();
        for (client, range) in inserted {
            let Some(author) = (client as usize).checked_sub(1) else {
                continue;
            };
            if author == self.index {
                // Servers that echo an edit back to its author: not a delivery.
                continue;
            }
            let seen = seen.entry(author).or_insert(0);
            ledger.arrived(seen, author, range.start, range.end, now);
        }
        drop(ledger);
        self.changed.notify_one();
    }

    /// Keeps an update to apply after the run, copied out of the socket's read buffer: a slice
    /// of it would keep the whole buffer alive, and the reader would allocate a new one (and
    /// move what it had read ahead) on every read.
    fn keep(&self, update: &[u8]) {
        self.deferred
            .borrow_mut()
            .push(Bytes::copy_from_slice(update));
    }

    /// Waits for the sync step 2.
    pub async fn synced(&self) -> Result<(), SimError> {
        while !self.synced.get() {
            if self.closed.get() {
                return Err(SimError::Diverged(format!(
                    "client {} closed before it synced: {}",
                    self.index,
                    self.error
                        .borrow()
                        .as_deref()
                        .unwrap_or("closed by the server")
                )));
            }
            self.changed.notified().await;
        }
        Ok(())
    }

    /// Waits until the document's state vector is `target`.
    pub async fn reached(&self, target: &StateVector) -> Result<(), SimError> {
        loop {
            if self.synced.get() && &self.doc.transact().state_vector() == target {
                return Ok(());
            }
            if self.closed.get() {
                return Err(SimError::Diverged(format!(
                    "client {} closed before it had the document",
                    self.index
                )));
            }
            self.changed.notified().await;
        }
    }

    fn next_random(&self) -> u64 {
        // xorshift64*: deterministic per client, cheap, good enough for edit positions.
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Inserts `len` characters where its behaviour says and returns the v1 update. (Random
    /// places are near the start: yrs finds a position by walking the text from its start, so
    /// edits anywhere in a long text would make the load generator, not the server, the
    /// bottleneck. Near the start, concurrent edits of different clients still interleave
    /// and conflict.)
    pub fn local_edit(&self, len: u32) -> Vec<u8> {
        let chunk: String = (0..len)
            .map(|_| char::from(b'a' + (self.next_random() % 26) as u8))
            .collect();
        let mut txn = self.doc.transact_mut();
        let pos = match self.behaviour.edit_at {
            EditAt::Random => {
                let span = self.text.len(&txn).min(EDIT_SPAN);
                (self.next_random() % (u64::from(span) + 1)) as u32
            }
            EditAt::End => self.text.len(&txn),
        };
        self.text.insert(&mut txn, pos, &chunk);
        txn.encode_update_v1()
    }

    /// Makes one tracked edit and sends it.
    pub fn edit(&self) {
        let update = self.local_edit(EDIT_LEN);
        self.ledger
            .borrow_mut()
            .record_edit(self.index, self.receivers, Instant::now());
        self.edits_made.set(self.edits_made.get() + 1);
        self.send(Message::Update(update.into()).encode());
    }

    /// Sends a raw update (not tracked).
    pub fn send_update(&self, update: Vec<u8>) {
        self.send(Message::Update(update.into()).encode());
    }

    /// Edits `count` times (or until `deadline`), keeping at most `window` edits in flight.
    pub async fn edit_loop(&self, count: Option<u32>, deadline: Option<Instant>, window: u32) {
        let mut made = 0u32;
        loop {
            if count.is_some_and(|count| made >= count)
                || deadline.is_some_and(|deadline| Instant::now() >= deadline)
                || self.closed.get()
            {
                return;
            }
            while self.ledger.borrow().inflight[self.index] >= window {
                if self.closed.get() {
                    return;
                }
                self.wake.notified().await;
            }
            self.edit();
            made += 1;
            // Let the writer and readers run between edits, as a real client would.
            tokio::task::yield_now().await;
        }
    }

    /// Applies what was deferred.
    pub fn apply_deferred(&self) -> Result<(), SimError> {
        let updates = std::mem::take(&mut *self.deferred.borrow_mut());
        let mut txn = self.doc.transact_mut();
        for bytes in updates {
            let update = Update::decode_v1(&bytes)
                .map_err(|e| SimError::Diverged(format!("bad deferred update: {e}")))?;
            txn.apply_update(update)
                .map_err(|e| SimError::Diverged(format!("deferred update not applied: {e}")))?;
        }
        Ok(())
    }

    pub fn text(&self) -> String {
        self.text.get_string(&self.doc.transact())
    }

    pub fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }

    /// Has yrs kept updates it could not integrate (a missing dependency)?
    pub fn has_pending(&self) -> bool {
        let txn = self.doc.transact();
        txn.store().pending_update().is_some() || txn.store().pending_ds().is_some()
    }

    /// Sends a close frame and waits (a little) for the server's answer.
    pub async fn close(&self) {
        self.out.borrow_mut().take();
        if !self.closed.get() {
            let done = self.reader_done.notified();
            let _ = tokio::time::timeout(Duration::from_secs(2), done).await;
        }
    }
}

/// The clocks an update carries, by client. The structural scan finds them without decoding
/// when each client's clocks are contiguous (every update a typing client sends); yrs decodes
/// the rest. Decoding every update made the load generator, not the server, the limit of
/// workload 5.
fn inserted_clocks(bytes: &[u8]) -> Result<Vec<(u64, Range<u32>)>, String> {
    match scan_update_v1(bytes, &ScanLimits::default()) {
        Ok(report) if report.clients.iter().all(|c| !c.skips) => Ok(report
            .clients
            .iter()
            .map(|c| (c.client, c.start..c.end))
            .collect()),
        _ => Update::decode_v1(bytes)
            .map(|update| insertions(&update))
            .map_err(|e| e.to_string()),
    }
}

fn insertions(update: &Update) -> Vec<(u64, Range<u32>)> {
    let inserted = update.insertions(true);
    inserted
        .iter()
        .flat_map(|(client, ranges)| ranges.iter().map(move |r| (client.get(), r.clone())))
        .collect()
}

/// Checks that the clients of one room converged: same text, same state vector, nothing
/// pending, and every edit of every member present.
pub fn check_room(clients: &[Rc<SimClient>]) -> Result<(), SimError> {
    let Some(first) = clients.first() else {
        return Ok(());
    };
    for client in clients {
        client.apply_deferred()?;
        if let Some(error) = client.error.borrow().as_ref() {
            return Err(SimError::Diverged(format!(
                "client {}: {error}",
                client.index
            )));
        }
        if client.has_pending() {
            return Err(SimError::Diverged(format!(
                "client {} holds updates it could not integrate",
                client.index
            )));
        }
    }
    let sv = first.state_vector();
    let text = first.text();
    for client in clients {
        let expected = client.edits_made.get() * EDIT_LEN;
        let have = sv.get(&ClientID::new(client.index as u64 + 1));
        if have < expected {
            return Err(SimError::Diverged(format!(
                "client {} made {} edits but the document has {} of its clock units",
                client.index,
                client.edits_made.get(),
                have
            )));
        }
    }
    for client in &clients[1..] {
        if client.state_vector() != sv {
            return Err(SimError::Diverged(format!(
                "clients {} and {} have different state vectors",
                first.index, client.index
            )));
        }
        if client.text() != text {
            return Err(SimError::Diverged(format!(
                "clients {} and {} have different texts",
                first.index, client.index
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edit_is_delivered_once_per_receiver_and_repeats_do_not_count() {
        let ledger = Ledger::new();
        let mut l = ledger.borrow_mut();
        let (author, _) = l.register();
        l.record_edit(author, 2, Instant::now());
        l.record_edit(author, 2, Instant::now());
        let (mut seen_a, mut seen_b) = (0, 0);
        // Receiver A gets both edits in one update, then again (an echo or a resync).
        l.arrived(&mut seen_a, author, 0, 2 * EDIT_LEN, Instant::now());
        l.arrived(&mut seen_a, author, 0, 2 * EDIT_LEN, Instant::now());
        assert_eq!((l.deliveries, l.outstanding), (2, 2));
        assert_eq!(l.inflight[author], 2);
        // Receiver B gets the first only: the second is still missing.
        l.arrived(&mut seen_b, author, 0, EDIT_LEN, Instant::now());
        assert_eq!((l.deliveries, l.outstanding, l.inflight[author]), (3, 1, 1));
        l.arrived(&mut seen_b, author, EDIT_LEN, 2 * EDIT_LEN, Instant::now());
        assert_eq!((l.deliveries, l.outstanding, l.inflight[author]), (4, 0, 0));
        assert_eq!(l.latencies_us.len(), 4);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_missing_delivery_fails_the_drain() {
        let ledger = Ledger::new();
        {
            let mut l = ledger.borrow_mut();
            let (author, _) = l.register();
            l.record_edit(author, 1, Instant::now());
        }
        let result = drained(&ledger, Duration::from_millis(20)).await;
        assert!(matches!(result, Err(SimError::Timeout(_))));
    }

    #[test]
    fn untracked_authors_and_clocks_beyond_the_edits_are_ignored() {
        let ledger = Ledger::new();
        let mut l = ledger.borrow_mut();
        let (author, _) = l.register();
        l.record_edit(author, 1, Instant::now());
        let mut seen = 0;
        l.arrived(&mut seen, 7, 0, 400, Instant::now());
        l.arrived(&mut seen, author, 0, 10 * EDIT_LEN, Instant::now());
        assert_eq!((l.deliveries, l.outstanding), (1, 0));
    }
}
