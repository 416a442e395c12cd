//! `wiredb-loadgen`: the load generator of wiredb's benchmark suite. It speaks the y-websocket
//! protocol to any server (wiredb, the original wiredb, pycrdt-websocket, the Node server) and
//! prints one JSON object per workload. It exits non-zero when a workload fails, above all
//! when an edit went missing.
//!
//! ```text
//! wiredb-loadgen --url ws://127.0.0.1:8000 --server-pid 1234 w1
//! wiredb-loadgen --url ws://127.0.0.1:8000 smoke
//! wiredb-loadgen burst-server --port 0 --updates 10000
//! wiredb-loadgen guard-cost
//! ```

mod burst;
mod guard_cost;
mod procstat;
mod sim;
mod wire;
mod workloads;

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use sim::{Behaviour, EditAt};
use workloads::{Edits, Target};

const USAGE: &str = "usage: wiredb-loadgen [--url ws://HOST:PORT] [--server-pid PID] [--prefix P]
                      [--rooms N] [--clients N] [--edits N] [--window N] [--duration-ms N]
                      [--doc-kib N] [--defer | --no-defer] [--edit-at random|end]
                      WORKLOAD...
       wiredb-loadgen burst-server [--port P] [--updates N]
       wiredb-loadgen guard-cost [--duration-ms N]   (in process: the guard's cost per update)

workloads (defaults in brackets):
  w1     one room, [10] clients, [200] edits each, [1] edit in flight per client
  w2     [50] rooms x [4] clients x [50] edits, [1] in flight
  w3     a [100] KiB document, then [50] clients join at once
  w4     [1000] idle connections over [100] rooms: server memory per connection
  w5     saturation: one room, [50] clients typing, each at its cursor (the end of its own
         text), [16] edits in flight each, for [3000] ms
  w5c    w5 with conflicts: each edit at a random place among the first 64 characters
  smoke  small versions of all of them (convergence only)";

#[derive(Default)]
struct Options {
    url: Option<String>,
    pid: Option<u32>,
    prefix: Option<String>,
    rooms: Option<usize>,
    clients: Option<usize>,
    edits: Option<u32>,
    window: Option<u32>,
    duration_ms: Option<u64>,
    doc_kib: Option<usize>,
    defer: Option<bool>,
    edit_at: Option<EditAt>,
    port: Option<u16>,
    updates: Option<usize>,
    workloads: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    fn value<T: std::str::FromStr>(name: &str, value: Option<&String>) -> Result<T, String> {
        value
            .ok_or_else(|| format!("{name} needs a value"))?
            .parse()
            .map_err(|_| format!("{name}: not a valid value"))
    }
    let mut options = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--url" => options.url = Some(value("--url", args.next())?),
            "--server-pid" => options.pid = Some(value("--server-pid", args.next())?),
            "--prefix" => options.prefix = Some(value("--prefix", args.next())?),
            "--rooms" => options.rooms = Some(value("--rooms", args.next())?),
            "--clients" => options.clients = Some(value("--clients", args.next())?),
            "--edits" => options.edits = Some(value("--edits", args.next())?),
            "--window" => options.window = Some(value("--window", args.next())?),
            "--duration-ms" => options.duration_ms = Some(value("--duration-ms", args.next())?),
            "--doc-kib" => options.doc_kib = Some(value("--doc-kib", args.next())?),
            "--port" => options.port = Some(value("--port", args.next())?),
            "--updates" => options.updates = Some(value("--updates", args.next())?),
            "--defer" => options.defer = Some(true),
            "--no-defer" => options.defer = Some(false),
            "--edit-at" => {
                options.edit_at = Some(match args.next().map(String::as_str) {
                    Some("random") => EditAt::Random,
                    Some("end") => EditAt::End,
                    _ => return Err("--edit-at: random or end".into()),
                })
            }
            "-h" | "--help" => return Err(String::new()),
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            other => options.workloads.push(other.to_owned()),
        }
    }
    if options.workloads.is_empty() {
        return Err("no workload given".into());
    }
    Ok(options)
}

async fn run_workload(name: &str, o: &Options, target: &Target) -> Result<Value, sim::SimError> {
    let edits = |default| Edits::Count(o.edits.unwrap_or(default));
    // The editing workloads differ in their defaults only; options override them.
    let editing = |rooms, clients, window, edits, behaviour: Behaviour| {
        workloads::editing(
            target,
            name,
            o.rooms.unwrap_or(rooms),
            o.clients.unwrap_or(clients),
            edits,
            o.window.unwrap_or(window),
            Behaviour {
                defer: o.defer.unwrap_or(behaviour.defer),
                edit_at: o.edit_at.unwrap_or(behaviour.edit_at),
            },
        )
    };
    match name {
        "w1" => editing(1, 10, 1, edits(200), Behaviour::LIVE).await,
        "w2" => editing(50, 4, 1, edits(50), Behaviour::LIVE).await,
        "w3" => {
            workloads::join(
                target,
                name,
                o.doc_kib.unwrap_or(100),
                o.clients.unwrap_or(50),
            )
            .await
        }
        "w4" => {
            workloads::idle(
                target,
                name,
                o.rooms.unwrap_or(100),
                o.clients.unwrap_or(10),
            )
            .await
        }
        "w5" | "w5c" => {
            let duration = Duration::from_millis(o.duration_ms.unwrap_or(3000));
            let edits = o.edits.map_or(Edits::For(duration), Edits::Count);
            let behaviour = if name == "w5" {
                Behaviour::TYPING
            } else {
                Behaviour::DEFERRED
            };
            editing(1, 50, 16, edits, behaviour).await
        }
        other => Err(sim::SimError::Diverged(format!("unknown workload {other}"))),
    }
}

/// Small versions of every workload: each must converge; nothing is timed.
async fn smoke(target: &Target) -> Vec<(String, Result<Value, sim::SimError>)> {
    vec![
        (
            "smoke-w1".into(),
            workloads::editing(
                target,
                "smoke-w1",
                1,
                10,
                Edits::Count(20),
                1,
                Behaviour::LIVE,
            )
            .await,
        ),
        (
            "smoke-w2".into(),
            workloads::editing(
                target,
                "smoke-w2",
                5,
                3,
                Edits::Count(10),
                1,
                Behaviour::LIVE,
            )
            .await,
        ),
        (
            "smoke-w3".into(),
            workloads::join(target, "smoke-w3", 10, 5).await,
        ),
        (
            "smoke-w4".into(),
            workloads::idle(target, "smoke-w4", 10, 3).await,
        ),
        (
            "smoke-w5".into(),
            workloads::editing(
                target,
                "smoke-w5",
                1,
                10,
                Edits::For(Duration::from_millis(300)),
                8,
                Behaviour::TYPING,
            )
            .await,
        ),
        (
            "smoke-w5c".into(),
            workloads::editing(
                target,
                "smoke-w5c",
                1,
                10,
                Edits::For(Duration::from_millis(300)),
                8,
                Behaviour::DEFERRED,
            )
            .await,
        ),
    ]
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(error) => {
            if !error.is_empty() {
                eprintln!("wiredb-loadgen: {error}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("wiredb-loadgen: cannot start a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    if options.workloads[0] == "guard-cost" {
        let budget = Duration::from_millis(options.duration_ms.unwrap_or(3000));
        let mut report = guard_cost::run(budget);
        if let Value::Object(map) = &mut report {
            map.insert("workload".into(), json!("guard-cost"));
            map.insert("ok".into(), json!(true));
        }
        println!("{report}");
        return ExitCode::SUCCESS;
    }
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        if options.workloads[0] == "burst-server" {
            let served =
                burst::serve(options.port.unwrap_or(0), options.updates.unwrap_or(10_000)).await;
            return match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("wiredb-loadgen: burst server: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        let target = Target {
            url: options
                .url
                .clone()
                .unwrap_or_else(|| "ws://127.0.0.1:8000".into()),
            pid: options.pid,
            prefix: options.prefix.clone().unwrap_or_else(|| "bench-".into()),
        };
        let mut results = Vec::new();
        for name in &options.workloads {
            if name == "smoke" {
                results.extend(smoke(&target).await);
            } else {
                results.push((name.clone(), run_workload(name, &options, &target).await));
            }
        }
        let mut failed = false;
        for (name, result) in results {
            let line = match result {
                Ok(mut report) => {
                    if let Value::Object(map) = &mut report {
                        map.insert("workload".into(), json!(name));
                        map.insert("ok".into(), json!(true));
                    }
                    report
                }
                Err(error) => {
                    failed = true;
                    json!({"workload": name, "ok": false, "error": error.to_string()})
                }
            };
            println!("{line}");
        }
        if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    })
}
