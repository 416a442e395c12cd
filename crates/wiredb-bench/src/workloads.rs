//! The workloads of the benchmark suite, each a function from its parameters to a JSON report.
//! Every workload ends with a convergence check: a run in which an edit went missing fails.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Semaphore;
use yrs::{ReadTxn, StateVector, Transact};

use crate::procstat;
use crate::sim::{check_room, drained, Behaviour, Ledger, SimClient, SimError};

/// Connections opened at once while setting up a workload: enough to be quick, few enough
/// that a server with a short listen backlog is not flooded.
const CONNECT_CONCURRENCY: usize = 32;
/// The longest a workload waits for its last deliveries or syncs.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// Where the server is and how to watch it.
pub struct Target {
    pub url: String,
    pub pid: Option<u32>,
    pub prefix: String,
}

impl Target {
    fn room_url(&self, room: &str) -> String {
        format!("{}/{}{}", self.url.trim_end_matches('/'), self.prefix, room)
    }

    fn cpu(&self) -> Option<procstat::CpuSample> {
        self.pid.and_then(|pid| procstat::CpuSample::take(pid).ok())
    }

    fn rss(&self) -> Option<u64> {
        self.pid.and_then(|pid| procstat::rss_kib(pid).ok())
    }
}

/// CPU and wall clock over a measured phase, for the server and for us.
struct Meter {
    start: Instant,
    server_cpu: Option<procstat::CpuSample>,
    own_cpu: Option<procstat::CpuSample>,
}

impl Meter {
    fn start(target: &Target) -> Meter {
        Meter {
            start: Instant::now(),
            server_cpu: target.cpu(),
            own_cpu: procstat::CpuSample::take(std::process::id()).ok(),
        }
    }

    /// Wall seconds up to `end`, server CPU seconds and the two cores' utilisation.
    fn stop(&self, target: &Target, end: Instant) -> Value {
        let wall = end.saturating_duration_since(self.start).as_secs_f64();
        // CPU is read now (after the convergence wait), so a server that is still busy with
        // late work is charged for it.
        let server_cpu = match (&self.server_cpu, target.cpu()) {
            (Some(before), Some(after)) => Some(before.seconds_until(&after)),
            _ => None,
        };
        let own_cpu = match (&self.own_cpu, procstat::CpuSample::take(std::process::id())) {
            (Some(before), Ok(after)) => before.seconds_until(&after),
            _ => 0.0,
        };
        json!({
            "wall_s": wall,
            "server_cpu_s": server_cpu,
            "server_util": server_cpu.map(|cpu| cpu / wall.max(1e-9)),
            "loadgen_util": own_cpu / wall.max(1e-9),
        })
    }
}

fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    Some(sorted[rank.min(sorted.len() - 1)])
}

fn latency_report(latencies: &mut [u32]) -> Value {
    latencies.sort_unstable();
    json!({
        "p50_us": percentile(latencies, 50.0),
        "p99_us": percentile(latencies, 99.0),
        "max_us": latencies.last(),
    })
}

/// Connects `rooms` x `per_room` clients, at most [`CONNECT_CONCURRENCY`] at a time, and waits
/// until every one is synced. Each room's first client connects (and syncs) before the others:
/// pycrdt-websocket 0.16 loses a connection that races another to open a new room.
async fn connect_rooms(
    target: &Target,
    name: &str,
    rooms: usize,
    per_room: usize,
    ledger: &Rc<RefCell<Ledger>>,
    behaviour: Behaviour,
) -> Result<Vec<Vec<Rc<SimClient>>>, SimError> {
    let limit = Rc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut by_room: Vec<Vec<Rc<SimClient>>> = vec![Vec::new(); rooms];
    for wave in [0..per_room.min(1), per_room.min(1)..per_room] {
        let mut handles = Vec::new();
        for room in 0..rooms {
            let url = target.room_url(&format!("{name}-{room}"));
            for _ in wave.clone() {
                let (url, limit, ledger) = (url.clone(), limit.clone(), ledger.clone());
                handles.push(tokio::task::spawn_local(async move {
                    let _permit = limit.acquire().await;
                    let receivers = per_room as u32 - 1;
                    let client = SimClient::connect(&url, receivers, &ledger, behaviour).await?;
                    tokio::time::timeout(DRAIN_LIMIT, client.synced())
                        .await
                        .map_err(|_| SimError::Timeout(format!("{url}: no sync step 2")))??;
                    Ok::<_, SimError>((room, client))
                }));
            }
        }
        for handle in handles {
            let (room, client) = handle
                .await
                .map_err(|e| SimError::Timeout(format!("connect task failed: {e}")))??;
            by_room[room].push(client);
        }
    }
    Ok(by_room)
}

async fn close_all(rooms: &[Vec<Rc<SimClient>>]) {
    let closing: Vec<_> = rooms
        .iter()
        .flatten()
        .map(|client| {
            let client = client.clone();
            tokio::task::spawn_local(async move { client.close().await })
        })
        .collect();
    for handle in closing {
        let _ = handle.await;
    }
}

fn check_rooms(rooms: &[Vec<Rc<SimClient>>]) -> Result<(), SimError> {
    rooms.iter().try_for_each(|clients| check_room(clients))
}

/// How long clients edit: a number of edits each, or for a while.
#[derive(Debug, Clone, Copy)]
pub enum Edits {
    Count(u32),
    For(Duration),
}

/// Workloads 1, 2 and 5: rooms of clients editing one shared text, `window` edits in flight
/// per client (an edit is in flight until every other member of its room has it).
pub async fn editing(
    target: &Target,
    name: &str,
    rooms: usize,
    per_room: usize,
    edits: Edits,
    window: u32,
    behaviour: Behaviour,
) -> Result<Value, SimError> {
    let ledger = Ledger::new();
    let by_room = connect_rooms(target, name, rooms, per_room, &ledger, behaviour).await?;
    let meter = Meter::start(target);
    let (count, deadline) = match edits {
        Edits::Count(n) => (Some(n), None),
        Edits::For(duration) => (None, Some(Instant::now() + duration)),
    };
    let loops: Vec<_> = by_room
        .iter()
        .flatten()
        .map(|client| {
            let client = client.clone();
            tokio::task::spawn_local(async move {
                client.edit_loop(count, deadline, window).await;
            })
        })
        .collect();
    for handle in loops {
        let _ = handle.await;
    }
    let drain = drained(&ledger, DRAIN_LIMIT).await;
    let end = ledger.borrow().last_arrival.unwrap_or_else(Instant::now);
    let mut report = meter.stop(target, end);
    drain?;
    check_rooms(&by_room)?;
    close_all(&by_room).await;

    let mut ledger = ledger.borrow_mut();
    let deliveries = ledger.deliveries;
    let edits_made: u64 = by_room
        .iter()
        .flatten()
        .map(|c| u64::from(c.edits_made.get()))
        .sum();
    let wall = report["wall_s"].as_f64().unwrap_or(0.0);
    let cpu = report["server_cpu_s"].as_f64();
    let fields = json!({
        "rooms": rooms,
        "clients_per_room": per_room,
        "window": window,
        "deferred": behaviour.defer,
        "edit_at": format!("{:?}", behaviour.edit_at).to_lowercase(),
        "edits": edits_made,
        "deliveries": deliveries,
        "deliveries_per_s": deliveries as f64 / wall.max(1e-9),
        "server_cpu_us_per_delivery": cpu.map(|cpu| cpu * 1e6 / deliveries.max(1) as f64),
        // What one core would deliver if the server had it all: on a shared machine, the
        // deliveries/s above are bounded by the share of the core the server got.
        "deliveries_per_server_cpu_s": cpu.map(|cpu| deliveries as f64 / cpu.max(1e-9)),
        "latency": latency_report(&mut ledger.latencies_us),
    });
    merge(&mut report, fields);
    Ok(report)
}

/// Workload 3: a document of about `doc_kib` KiB, then `joiners` clients join at once; the
/// time until every one of them holds the whole document.
pub async fn join(
    target: &Target,
    name: &str,
    doc_kib: usize,
    joiners: usize,
) -> Result<Value, SimError> {
    let ledger = Ledger::new();
    let url = target.room_url(&format!("{name}-0"));
    let seed = SimClient::connect(&url, 0, &ledger, Behaviour::LIVE).await?;
    seed.synced().await?;
    // Many small inserts at random places: a document with history, not one big string.
    let chunk = 100;
    for _ in 0..(doc_kib * 1024).div_ceil(chunk as usize) {
        seed.local_edit(chunk);
    }
    let whole = seed
        .doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let doc_bytes = whole.len();
    seed.send_update(whole);
    let goal = seed.state_vector();

    // The server has the document once a fresh client gets all of it.
    let ready_by = Instant::now() + DRAIN_LIMIT;
    loop {
        let probe = SimClient::connect(&url, 0, &ledger, Behaviour::LIVE).await?;
        let got = tokio::time::timeout(Duration::from_millis(500), probe.reached(&goal)).await;
        probe.close().await;
        if matches!(got, Ok(Ok(()))) {
            break;
        }
        if Instant::now() > ready_by {
            return Err(SimError::Timeout(
                "the server never had the seed document".into(),
            ));
        }
    }

    let meter = Meter::start(target);
    let start = Instant::now();
    let tasks: Vec<_> = (0..joiners)
        .map(|_| {
            let (url, ledger) = (url.clone(), ledger.clone());
            tokio::task::spawn_local(async move {
                // Deferred: a joiner has joined when the server's sync step 2 is in; applying
                // it is the client's work, not the server's (done before the check below).
                let client = SimClient::connect(&url, 0, &ledger, Behaviour::DEFERRED).await?;
                tokio::time::timeout(DRAIN_LIMIT, client.synced())
                    .await
                    .map_err(|_| SimError::Timeout("a joiner never got the document".into()))??;
                Ok::<_, SimError>((client, start.elapsed()))
            })
        })
        .collect();
    let mut clients = vec![seed.clone()];
    let mut times: Vec<u32> = Vec::new();
    for task in tasks {
        let (client, took) = task
            .await
            .map_err(|e| SimError::Timeout(format!("join task failed: {e}")))??;
        times.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        clients.push(client);
    }
    let all_synced = start.elapsed();
    let mut report = meter.stop(target, start + all_synced);
    check_room(&clients)?;
    if let Some(joiner) = clients.iter().skip(1).find(|c| c.state_vector() != goal) {
        return Err(SimError::Diverged(format!(
            "joiner {} did not get the whole document",
            joiner.index
        )));
    }
    let rooms = vec![clients];
    close_all(&rooms).await;
    let cpu = report["server_cpu_s"].as_f64();
    merge(
        &mut report,
        json!({
            "joiners": joiners,
            "doc_bytes": doc_bytes,
            "join_ms": all_synced.as_secs_f64() * 1e3,
            "server_cpu_ms_per_join": cpu.map(|cpu| cpu * 1e3 / joiners.max(1) as f64),
            "join_latency": latency_report(&mut times),
        }),
    );
    Ok(report)
}

/// Workload 4: idle connections spread over rooms; the server's resident memory per
/// connection. Then one edit per room checks that every connection still works.
pub async fn idle(
    target: &Target,
    name: &str,
    rooms: usize,
    per_room: usize,
) -> Result<Value, SimError> {
    let before = target.rss();
    let ledger = Ledger::new();
    let start = Instant::now();
    let by_room = connect_rooms(target, name, rooms, per_room, &ledger, Behaviour::LIVE).await?;
    let connect_s = start.elapsed().as_secs_f64();
    // Let the server finish what the joins started (room tasks, buffers) before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = target.rss();

    for clients in &by_room {
        if let Some(first) = clients.first() {
            first.edit();
        }
    }
    drained(&ledger, DRAIN_LIMIT).await?;
    check_rooms(&by_room)?;
    let connections = rooms * per_room;
    close_all(&by_room).await;
    Ok(json!({
        "rooms": rooms,
        "connections": connections,
        "connect_s": connect_s,
        "rss_kib_before": before,
        "rss_kib_after": after,
        "rss_kib_per_connection": match (before, after) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before) as f64 / connections as f64),
            _ => None,
        },
        "deliveries": ledger.borrow().deliveries,
    }))
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}
