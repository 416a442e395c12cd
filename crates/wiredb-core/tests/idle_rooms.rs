//! Rooms that are opened and closed without an edit cost nothing on disk, and however many
//! open at once, their stores use at most `MAX_FILE_JOBS` blocking threads. (Its own test
//! binary: the thread count is this process's, which no other test shares.)

use std::time::{Duration, Instant};

use wiredb_core::persist::{FsyncPolicy, Phase, RoomStore, StoreConfig, MAX_FILE_JOBS};
use wiredb_core::room::{RoomCore, RoomLimits};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

fn wait(store: &RoomStore, phase: Phase) {
    let status = store
        .wait_until(Some(Duration::from_secs(60)), |s| s.phase != Phase::Loading)
        .expect("the store opened");
    assert_ne!(status.phase, Phase::Failed, "{:?}", status.error);
    if phase == Phase::Closed {
        store.close();
        store
            .wait_until(Some(Duration::from_secs(60)), |s| s.phase == Phase::Closed)
            .expect("the store closed");
    }
}

#[test]
fn many_rooms_opened_at_once_without_an_edit_leave_no_file_and_few_threads() {
    const ROOMS: usize = 400;
    let dir = tempfile::tempdir().expect("temp dir");
    // The runtime's workers are started by the first store: count from there.
    let warm = RoomStore::attach(
        RoomCore::new("warm", RoomLimits::default()),
        dir.path().join("warm_updates.y"),
        StoreConfig {
            create_lazily: true,
            ..StoreConfig::default()
        },
        None,
    );
    wait(&warm, Phase::Closed);
    let before = threads();
    let started = Instant::now();
    let stores: Vec<RoomStore> = (0..ROOMS)
        .map(|i| {
            let config = StoreConfig {
                create_lazily: true,
                squash: i % 2 == 0,
                fsync: FsyncPolicy::Always,
                ..StoreConfig::default()
            };
            let core = RoomCore::new(format!("room-{i}"), RoomLimits::default());
            RoomStore::attach(
                core,
                dir.path().join(format!("room-{i}_updates.y")),
                config,
                None,
            )
        })
        .collect();
    for store in &stores {
        wait(store, Phase::Open);
    }
    for store in &stores {
        store.close();
    }
    for store in &stores {
        wait(store, Phase::Closed);
    }
    // Idle blocking threads linger for 10 s, so this counts every one that was started.
    let after = threads();
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("readable")
        .map(|e| e.expect("entry").file_name())
        .collect();
    println!(
        "{ROOMS} rooms opened and closed in {:?}: {} files, threads {before} -> {after}",
        started.elapsed(),
        files.len()
    );
    assert!(
        files.is_empty(),
        "no room was edited, yet {} files, such as {:?}",
        files.len(),
        &files[..files.len().min(3)]
    );
    assert!(
        after <= before + MAX_FILE_JOBS,
        "threads {before} -> {after}, more than the {MAX_FILE_JOBS} file jobs"
    );
}
