//! Crash points in a squash (and in the two other ways a log is replaced): the process is
//! killed (SIGKILL, injected by `strace`) at each `openat`, `write`, `fsync`, `fdatasync`,
//! `rename`, `ftruncate` and `unlink`, and every time the file must be exactly the state before
//! or the state after, never anything else.
//!
//! The replacements, each a temporary file written, fsynced, renamed over the log, and the
//! directory fsynced:
//! - `squash`: opening a log of several records with `squash=true` (one merged record), then
//!   appending to the squashing log (merged with the new update);
//! - `rewrite`: what a store does after an fsync failed: the whole document replaces the file;
//! - `repair`: opening a file with a hole (a torn record followed by checksummed ones)
//!   rewrites it without the hole;
//! - `create`, `create-squash`: a log opened lazily creates its file at the first append (the
//!   header linked into place, then the record appended, or squashed in): no file, then an
//!   empty log, then the record; never an empty or torn file.
//!
//! A process kill, not a power cut: what a killed process wrote is in the page cache, so this
//! shows the order of the steps is right (never a moment with a truncated or half-written
//! log), not that fsync reached the disk. The child is this very binary (`harness = false`),
//! single-threaded, so strace's per-thread syscall counts are the replacement's own. Without
//! strace the test is skipped, unless `CI=true`, where it fails (scripts/test.sh installs it).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use wiredb_core::record::{encode_records, parse_records};
use wiredb_core::store::{FileLog, TEMP_DIR};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, Text, Transact, Update};

const HEADER: &[u8] = b"0.0.1\0";
const CHILD: &str = "WIREDB_CRASH_CHILD";
/// Every syscall that changes a file or a name, and the opens that create them.
const KINDS: [&str; 15] = [
    "openat",
    "mkdir",
    "mkdirat",
    "rmdir",
    "link",
    "linkat",
    "write",
    "fsync",
    "fdatasync",
    "rename",
    "renameat",
    "renameat2",
    "ftruncate",
    "unlink",
    "unlinkat",
];

fn main() {
    if let Ok(scenario) = std::env::var(CHILD) {
        let dir = std::env::var_os("WIREDB_CRASH_DIR").expect("the child's directory");
        child(&scenario, Path::new(&dir));
        return;
    }
    if Command::new("strace").arg("-V").output().is_err() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("strace is missing (scripts/test.sh installs it)");
        }
        println!("squash_crash_points: skipped, strace is not installed");
        return;
    }
    for scenario in ["squash", "rewrite", "repair", "create", "create-squash"] {
        let (killed, leftovers) = crash_at_every_step(scenario);
        let total: usize = killed.iter().map(|(_, n)| n).sum();
        let nonzero: Vec<_> = killed.iter().filter(|(_, n)| *n > 0).collect();
        println!(
            "{scenario}: {total} crash points {nonzero:?}, each left exactly the state before \
             or after; {leftovers} left a temporary file, removed by the next open"
        );
    }
    println!("5 passed, 0 failed");
}

/// The child: one scenario's replacement, on `dir/doc.y`.
fn child(scenario: &str, dir: &Path) {
    let extra = std::fs::read(dir.join("extra.bin")).expect("the update to add");
    let path = dir.join("doc.y");
    match scenario {
        "squash" => {
            let (mut log, _, _) = FileLog::open(path, true).expect("open with squash");
            log.append(&[&extra]).expect("squashing append");
        }
        "rewrite" => {
            let (mut log, records, _) = FileLog::open(path, false).expect("open");
            let mut all = records;
            all.push(extra);
            let state = yrs::merge_updates_v1(&all).expect("merge");
            log.rewrite(&state).expect("rewrite");
        }
        "repair" => {
            let (_, _, report) = FileLog::open(path, false).expect("open with a hole");
            assert_eq!(report.holes, 1);
        }
        "create" | "create-squash" => {
            let squash = scenario == "create-squash";
            let (mut log, _, _) = FileLog::open_lazy(path, squash).expect("open lazily");
            log.append(&[&extra])
                .expect("the first append creates the file");
        }
        other => panic!("unknown scenario {other}"),
    }
}

fn text_updates(client: u64, parts: &[&str]) -> Vec<Vec<u8>> {
    let doc = Doc::with_client_id(client);
    let text = doc.get_or_insert_text("t");
    parts
        .iter()
        .map(|part| {
            let mut txn = doc.transact_mut();
            let end = text.len(&txn);
            text.insert(&mut txn, end, part);
            txn.encode_update_v1()
        })
        .collect()
}

fn text_of(records: &[Vec<u8>]) -> String {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    for record in records {
        txn.apply_update(Update::decode_v1(record).expect("a record decodes"))
            .expect("a record applies");
    }
    text.get_string(&txn)
}

/// The file read strictly: a header, then records with no torn byte and no hole.
fn strict_state(path: &Path) -> Option<(usize, String)> {
    let data = std::fs::read(path).expect("the log exists");
    let body = data.strip_prefix(HEADER)?;
    let parsed = parse_records(body);
    let clean = parsed.holes.is_empty()
        && parsed.good_end == body.len()
        && parsed.checked == parsed.records.len();
    clean.then(|| (parsed.records.len(), text_of(&parsed.records)))
}

/// The temporary files of the logs in `dir` (in their own directory), and anything else
/// that looks like one (the names 0.8.0 gave them).
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let entries = |dir: &Path| -> Vec<PathBuf> {
        match std::fs::read_dir(dir) {
            Ok(entries) => entries.map(|e| e.expect("entry").path()).collect(),
            Err(_) => Vec::new(),
        }
    };
    let mut found = entries(&dir.join(TEMP_DIR));
    found.extend(entries(dir).into_iter().filter(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().contains(".tmp"))
    }));
    found
}

fn run_child(scenario: &str, dir: &Path, kind: &str, when: u32) -> ExitStatus {
    Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "-e"])
        .arg(format!("trace={kind}"))
        .arg("-e")
        .arg(format!("inject={kind}:signal=SIGKILL:when={when}"))
        .arg(std::env::current_exe().expect("this test binary"))
        .env(CHILD, scenario)
        .env("WIREDB_CRASH_DIR", dir)
        // Cargo's library path makes the loader try dozens of opens before main.
        .env_remove("LD_LIBRARY_PATH")
        .status()
        .expect("strace runs")
}

/// Tells whether a file's bytes (`None`: no file) are one of a scenario's states.
type Check = Box<dyn Fn(Option<&[u8]>) -> bool>;

/// A scenario's starting file (`None`: none), and the file states a crash may leave: before
/// and after.
struct Scenario {
    initial: Option<Vec<u8>>,
    is_before: Check,
    is_after: Check,
}

fn scenario(name: &str, dir: &Path) -> Scenario {
    let updates = text_updates(1, &["a", "b", "c", "d"]);
    let extra = text_updates(2, &["+tail"]).remove(0);
    std::fs::write(dir.join("extra.bin"), &extra).expect("write extra");
    let refs: Vec<&[u8]> = updates.iter().map(Vec::as_slice).collect();
    let seeded = [HEADER, &encode_records(&refs)[..]].concat();
    let before = text_of(&updates);
    let after = text_of(&[updates.clone(), vec![extra]].concat());
    let probe = dir.join("probe.y");
    let state = move |data: &[u8]| {
        std::fs::write(&probe, data).expect("probe");
        strict_state(&probe)
    };
    match name {
        "squash" | "rewrite" => {
            let (b, a) = (before.clone(), after.clone());
            let state_a = state.clone();
            Scenario {
                initial: Some(seeded),
                // The 4 records, or already squashed into one (the first squash, on open).
                is_before: Box::new(
                    move |d| matches!(d.and_then(&state), Some((n, t)) if t == b && (n == 4 || n == 1)),
                ),
                is_after: Box::new(move |d| matches!(d.and_then(&state_a), Some((1, t)) if t == a)),
            }
        }
        "repair" => {
            // A torn record of another writer between the first record and the others.
            let torn = encode_records(&[&text_updates(3, &["torn, never whole"])[0]]);
            let mut initial = [HEADER, &encode_records(&refs[..1])[..]].concat();
            initial.extend_from_slice(&torn[..torn.len() / 2]);
            initial.extend(encode_records(&refs[1..]));
            let (start, repaired) = (initial.clone(), seeded);
            Scenario {
                initial: Some(initial),
                is_before: Box::new(move |d| d == Some(start.as_slice())),
                is_after: Box::new(move |d| d == Some(repaired.as_slice())),
            }
        }
        "create" | "create-squash" => {
            // No file, or an empty log (the header only): never an empty or torn file.
            let state_a = state.clone();
            let tail = text_of(&[text_updates(2, &["+tail"]).remove(0)]);
            Scenario {
                initial: None,
                is_before: Box::new(move |d| d.is_none() || d == Some(HEADER)),
                is_after: Box::new(
                    move |d| matches!(d.and_then(&state_a), Some((1, t)) if t == tail),
                ),
            }
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// Returns how many runs were killed at each kind of syscall, and how many left a temporary
/// file.
fn crash_at_every_step(name: &str) -> (Vec<(&'static str, usize)>, usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("work dir");
    let path = work.join("doc.y");
    let scenario = scenario(name, dir.path());
    std::fs::copy(dir.path().join("extra.bin"), work.join("extra.bin")).expect("copy extra");
    let (mut killed, mut leftovers) = (Vec::new(), 0);
    let mut seen_after = false;
    for kind in KINDS {
        let mut kills = 0;
        for when in 1.. {
            assert!(when < 1000, "{name} {kind}: the child never finishes");
            match &scenario.initial {
                Some(initial) => std::fs::write(&path, initial).expect("reset"),
                None => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("reset: {e}"),
                    _ => {}
                },
            }
            for tmp in temp_files(&work) {
                std::fs::remove_file(tmp).expect("remove temp");
            }
            let status = run_child(name, &work, kind, when);
            let data = match std::fs::read(&path) {
                Ok(data) => Some(data),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => panic!("read the log: {e}"),
            };
            let data = data.as_deref();
            if status.success() {
                assert!(
                    (scenario.is_after)(data),
                    "{name} {kind}: a finished replacement"
                );
                assert!(temp_files(&work).is_empty());
                break;
            }
            assert_eq!(
                status.signal(),
                Some(9),
                "{name} {kind} #{when}: killed, not failed"
            );
            kills += 1;
            leftovers += usize::from(!temp_files(&work).is_empty());
            if (scenario.is_after)(data) {
                seen_after = true;
            } else {
                assert!(
                    (scenario.is_before)(data),
                    "{name} {kind} #{when}: neither the state before nor after"
                );
            }
            // And a log that survived a crash opens (removing the dead process's temporary
            // file) and appends as usual.
            let (mut log, _, _) = FileLog::open(&path, false).expect("reopen");
            assert!(temp_files(&work).is_empty(), "stale temporary file removed");
            log.append(&[&text_updates(4, &["!"])[0]])
                .expect("append after a crash");
        }
        killed.push((kind, kills));
    }
    // (A plain creation's last step is its record's write: nothing comes after it.)
    assert!(
        seen_after || name == "create",
        "{name}: some crash points come after the rename"
    );
    let total: usize = killed.iter().map(|(_, n)| n).sum();
    assert!(total > 5, "{name}: only {total} crash points");
    (killed, leftovers)
}
