//! Crash points in a squash: the process is killed (SIGKILL, injected by `strace`) at each
//! `openat`, `write`, `fsync`, `fdatasync`, `rename`, `ftruncate` and `unlink` of a squash,
//! and every time the file must be exactly a valid log (no torn byte, no hole) holding exactly
//! the state before or the state after.
//!
//! The squash is the one `FileLog` does twice: opening a log of several records with
//! `squash=true` (replace by one merged record) and appending to a squashing log (replace by
//! the merge with the new update). Each replacement writes a temporary file, fsyncs it,
//! renames it over the log and fsyncs the directory.
//!
//! A process kill, not a power cut: what a killed process wrote is in the page cache, so this
//! shows the order of the steps is right (never a moment with a truncated or half-written
//! log), not that fsync reached the disk. The child is this very binary (`harness = false`),
//! single-threaded, so strace's per-thread syscall counts are the squash's own. Without strace
//! the test is skipped, unless `CI=true`, where it fails (scripts/test.sh installs strace).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use wiredb_core::record::parse_records;
use wiredb_core::store::FileLog;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, Text, Transact, Update};

const HEADER: &[u8] = b"0.0.1\0";
const CHILD: &str = "WIREDB_SQUASH_CHILD";
/// Every syscall that changes a file or a name, and the opens that create them.
const KINDS: [&str; 10] = [
    "openat",
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
    if let Some(dir) = std::env::var_os(CHILD) {
        child(Path::new(&dir));
        return;
    }
    if Command::new("strace").arg("-V").output().is_err() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("strace is missing (scripts/test.sh installs it)");
        }
        println!("squash_crash_points: skipped, strace is not installed");
        return;
    }
    let (killed, leftovers) = crash_at_every_step();
    let total: usize = killed.iter().map(|(_, n)| n).sum();
    println!(
        "squash_crash_points: {total} crash points ({killed:?}), each left exactly the state \
         before or after; {leftovers} left a temporary file, removed by the next open"
    );
    println!("1 passed, 0 failed");
}

/// The child: a squash on open, then a squashing append of `extra.bin`.
fn child(dir: &Path) {
    let extra = std::fs::read(dir.join("extra.bin")).expect("the update to append");
    let (mut log, _, _) = FileLog::open(dir.join("doc.y"), true).expect("open with squash");
    log.append(&[&extra]).expect("squashing append");
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

/// The file as it is, read strictly: a header, then records with no torn byte and no hole.
fn strict_state(path: &Path) -> (usize, String) {
    let data = std::fs::read(path).expect("the log exists");
    assert!(
        data.starts_with(HEADER),
        "header intact: {:?}",
        &data[..data.len().min(8)]
    );
    let body = &data[HEADER.len()..];
    let parsed = parse_records(body);
    assert!(parsed.holes.is_empty(), "no hole");
    assert_eq!(parsed.good_end, body.len(), "no torn or garbage byte");
    assert_eq!(
        parsed.checked,
        parsed.records.len(),
        "every record checksummed"
    );
    (parsed.records.len(), text_of(&parsed.records))
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("readable dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect()
}

fn run_child(dir: &Path, kind: &str, when: u32) -> ExitStatus {
    Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "-e"])
        .arg(format!("trace={kind}"))
        .arg("-e")
        .arg(format!("inject={kind}:signal=SIGKILL:when={when}"))
        .arg(std::env::current_exe().expect("this test binary"))
        .env(CHILD, dir)
        // Cargo's library path makes the loader try dozens of opens before main.
        .env_remove("LD_LIBRARY_PATH")
        .status()
        .expect("strace runs")
}

/// Returns how many runs were killed at each kind of syscall, and how many left a temporary
/// file.
fn crash_at_every_step() -> (Vec<(&'static str, usize)>, usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("doc.y");
    let updates = text_updates(1, &["a", "b", "c", "d"]);
    let extra = text_updates(2, &["+tail"]).remove(0);
    std::fs::write(dir.path().join("extra.bin"), &extra).expect("write extra");
    let initial = {
        let (mut log, _, _) = FileLog::open(&path, false).expect("create");
        let refs: Vec<&[u8]> = updates.iter().map(Vec::as_slice).collect();
        log.append(&refs).expect("seed");
        std::fs::read(&path).expect("seeded")
    };
    let before = text_of(&updates);
    let after = {
        let mut all = updates.clone();
        all.push(extra.clone());
        text_of(&all)
    };
    assert_eq!(strict_state(&path), (4, before.clone()));
    let (mut killed, mut leftovers) = (Vec::new(), 0);
    let mut seen_after = false;
    for kind in KINDS {
        let mut kills = 0;
        for when in 1.. {
            assert!(when < 1000, "{kind}: the child never finishes");
            std::fs::write(&path, &initial).expect("reset");
            for tmp in temp_files(dir.path()) {
                std::fs::remove_file(tmp).expect("remove temp");
            }
            let status = run_child(dir.path(), kind, when);
            let (records, text) = strict_state(&path);
            if status.success() {
                assert_eq!((records, &text), (1, &after), "{kind}: a finished squash");
                assert!(temp_files(dir.path()).is_empty());
                break;
            }
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(9),
                "{kind} #{when}: killed, not failed"
            );
            kills += 1;
            leftovers += usize::from(!temp_files(dir.path()).is_empty());
            if text == after {
                seen_after = true;
                assert_eq!(records, 1, "{kind} #{when}");
            } else {
                assert_eq!(text, before, "{kind} #{when}: the state before, or after");
                assert!(records == 4 || records == 1, "{kind} #{when}: {records}");
            }
            // And a log that survived a crash opens (removing the dead squash's temporary
            // file) and appends as usual.
            let (mut log, _, report) = FileLog::open(&path, false).expect("reopen");
            assert_eq!(report.torn_bytes, 0);
            assert!(
                temp_files(dir.path()).is_empty(),
                "stale temporary file removed"
            );
            log.append(&[&text_updates(3, &["!"])[0]])
                .expect("append after a crash");
        }
        killed.push((kind, kills));
    }
    assert!(seen_after, "some crash points come after the rename");
    let total: usize = killed.iter().map(|(_, n)| n).sum();
    assert!(total > 10, "only {total} crash points");
    (killed, leftovers)
}
