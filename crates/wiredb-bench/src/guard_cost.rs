//! What the guard in front of every document costs per update, in process (no sockets, so
//! nothing but the work itself is timed).
//!
//! For each corpus of real updates, three ways of taking them in, each replayed into a fresh
//! document many times (the median round counts):
//!
//! - `bare`: what an unguarded server does, `Update::decode_v1` then `apply_update` and commit;
//! - `guarded`: what the room does, the guard's calls (`guard::apply_update`: size check,
//!   structural scan, decode and apply under `catch_unwind`; plus the pending-state checks
//!   before and after and the state vector the room keeps in case it must re-encode);
//! - `room`: `RoomCore::handle` in a room of ten members, i.e. everything a server does for an
//!   update short of the socket (guard, apply, encode once, queue to nine others).
//!
//! `guard_ns` is `guarded - bare`, reported against `bare` and against `room`. The share of a
//! server's whole CPU per update (sockets included) is worked out by bench/run.py from the w1
//! workload's figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::Notify;
use wiredb_core::awareness::MemberId;
use wiredb_core::guard::{self, GuardLimits};
use wiredb_core::protocol::Message;
use wiredb_core::queue::{FrameQueue, QueueLimits};
use wiredb_core::room::{JoinKind, RoomCore, RoomLimits};
use wiredb_core::wake::Waker;
use yrs::updates::decoder::Decode;
use yrs::{Any, Array, Doc, Map, ReadTxn, Text, Transact, Update};

use crate::sim::{EDIT_LEN, TEXT};

/// Updates of `clients` writers taking turns on one text, each seeing the others' edits
/// first: the w1 workload's traffic.
fn typing(clients: u64, edits: usize) -> Vec<Bytes> {
    let docs: Vec<Doc> = (1..=clients).map(Doc::with_client_id).collect();
    let mut updates = Vec::new();
    for round in 0..edits {
        for (index, doc) in docs.iter().enumerate() {
            let text = doc.get_or_insert_text(TEXT);
            let update = {
                let mut txn = doc.transact_mut();
                // Somewhere in the middle, as people type, not only at the end.
                let at = text.len(&txn) / 2;
                let chunk = format!("{:0width$}", round % 10_000, width = EDIT_LEN as usize);
                text.insert(&mut txn, at, &chunk);
                txn.encode_update_v1()
            };
            for (other, peer) in docs.iter().enumerate() {
                if other != index {
                    let decoded = Update::decode_v1(&update).expect("our own update decodes");
                    peer.transact_mut()
                        .apply_update(decoded)
                        .expect("our own update applies");
                }
            }
            updates.push(Bytes::from(update));
        }
    }
    updates
}

/// Large text inserts: one writer pasting `size`-byte blocks.
fn paste(count: usize, size: usize) -> Vec<Bytes> {
    let doc = Doc::with_client_id(7);
    let text = doc.get_or_insert_text(TEXT);
    (0..count)
        .map(|i| {
            let mut txn = doc.transact_mut();
            let end = text.len(&txn);
            let block: String = (0..size)
                .map(|j| (b'a' + ((i + j) % 26) as u8) as char)
                .collect();
            text.insert(&mut txn, end, &block);
            Bytes::from(txn.encode_update_v1())
        })
        .collect()
}

/// Structured values: map entries holding nested `Any` (what apps put in a Y.Map), and array
/// pushes. The scan walks every `Any`, so this is its worst honest case.
fn structured(count: usize) -> Vec<Bytes> {
    let doc = Doc::with_client_id(9);
    let map = doc.get_or_insert_map("state");
    let list = doc.get_or_insert_array("items");
    (0..count)
        .map(|i| {
            let mut txn = doc.transact_mut();
            let row: Vec<Any> = (0..8)
                .map(|j| {
                    Any::from(std::collections::HashMap::from([
                        ("id".to_string(), Any::from((i * 8 + j) as f64)),
                        ("name".to_string(), Any::from(format!("item {i}.{j}"))),
                        (
                            "tags".to_string(),
                            Any::from(vec![Any::from("a"), Any::from(true)]),
                        ),
                    ]))
                })
                .collect();
            map.insert(&mut txn, format!("row{}", i % 50), Any::from(row.clone()));
            list.push_back(&mut txn, Any::from(row));
            Bytes::from(txn.encode_update_v1())
        })
        .collect()
}

fn bare(updates: &[Bytes]) {
    let doc = Doc::new();
    for update in updates {
        let decoded = Update::decode_v1(update).expect("corpus updates decode");
        let mut txn = doc.transact_mut();
        txn.apply_update(decoded).expect("corpus updates apply");
    }
}

fn guarded(updates: &[Bytes]) {
    let doc = Doc::new();
    let limits = GuardLimits::default();
    for update in updates {
        // The room's steps (RoomCore::apply), in its order.
        let before = {
            let txn = doc.transact();
            (txn.has_missing_updates(), txn.state_vector())
        };
        let pending_after =
            guard::apply_update(&doc, update, &limits).expect("corpus updates pass the guard");
        std::hint::black_box((before, pending_after));
    }
}

fn room(updates: &[Bytes]) {
    let core = RoomCore::new("guard-cost", RoomLimits::default());
    let queues: Vec<Arc<FrameQueue>> = (0..10)
        .map(|_| {
            let limits = QueueLimits {
                max_frames: usize::MAX,
                max_bytes: usize::MAX,
            };
            Arc::new(FrameQueue::new(
                limits,
                Waker::Tokio(Arc::new(Notify::new())),
            ))
        })
        .collect();
    let members: Vec<MemberId> = queues
        .iter()
        .map(|queue| core.join(queue.clone(), JoinKind::Peer))
        .collect();
    for queue in &queues {
        queue.drain();
    }
    for (index, update) in updates.iter().enumerate() {
        let sender = members[index % members.len()];
        core.handle(sender, Message::Update(update.clone()))
            .expect("corpus updates pass the room");
    }
    std::hint::black_box(queues.iter().map(|q| q.drain().frames.len()).sum::<usize>());
}

/// The median time of one replay of each way, over enough rounds to fill about `budget`.
/// Rounds take turns (bare, guarded, room, bare, ...) so that whatever else the machine does
/// weighs on all three alike.
fn median_rounds(updates: &[Bytes], budget: Duration, ways: &[fn(&[Bytes])]) -> Vec<Duration> {
    let started = Instant::now();
    for way in ways {
        way(updates); // warm up
    }
    let once = started.elapsed().max(Duration::from_micros(1));
    let rounds = (budget.as_nanos() / once.as_nanos()).clamp(5, 300) as usize;
    let mut times = vec![Vec::with_capacity(rounds); ways.len()];
    for _ in 0..rounds {
        for (way, times) in ways.iter().zip(&mut times) {
            let started = Instant::now();
            way(updates);
            times.push(started.elapsed());
        }
    }
    times
        .into_iter()
        .map(|mut times| {
            times.sort();
            times[rounds / 2]
        })
        .collect()
}

fn per_update_ns(round: Duration, updates: &[Bytes]) -> f64 {
    round.as_nanos() as f64 / updates.len() as f64
}

/// One JSON report: per corpus, ns per update each way, and the guard's share.
pub fn run(budget: Duration) -> Value {
    let corpora = [
        ("typing", typing(10, 200)),
        ("paste-4k", paste(200, 4096)),
        ("structured", structured(300)),
    ];
    let mut report = serde_json::Map::new();
    for (name, updates) in corpora {
        let bytes: usize = updates.iter().map(Bytes::len).sum();
        let rounds = median_rounds(&updates, budget, &[bare, guarded, room]);
        let [bare_ns, guarded_ns, room_ns] = [0, 1, 2].map(|i| per_update_ns(rounds[i], &updates));
        let guard_ns = (guarded_ns - bare_ns).max(0.0);
        report.insert(
            name.into(),
            json!({
                "updates": updates.len(),
                "mean_update_bytes": bytes / updates.len(),
                "bare_ns": bare_ns.round(),
                "guarded_ns": guarded_ns.round(),
                "room_ns": room_ns.round(),
                "guard_ns": guard_ns.round(),
                "guard_vs_bare": guard_ns / bare_ns,
                "guard_vs_room": guard_ns / room_ns,
            }),
        );
    }
    Value::Object(report)
}
