//! A room's native file store: a mirror member of a room core whose updates a tokio task appends
//! to a [`FileLog`], so persisting a room runs no Python per update. Also maps room ids to file
//! names that can never leave their directory.
//!
//! Opening loads the file into the room (the file's content is applied to the room, and what the
//! room has that the file lacks is written), then every update the room applies is written: all
//! that is pending goes out as one record in one write, `write_delay` bounds how long an update
//! may wait to be batched with later ones, and closing writes what is left (and fsyncs, unless
//! the policy is `none`) before it reports closed. File I/O runs on tokio's blocking pool, never
//! on a worker, and at most [`MAX_FILE_JOBS`] such jobs run at once in the process, so that many
//! rooms opening or writing together queue for a few threads instead of spawning one each;
//! nothing here calls into Python (it is woken through a [`Waker`]).
//!
//! With [`StoreConfig::create_lazily`] (what a server's rooms use) the file is created at the
//! first write: a room that is never edited leaves no file and costs no fsync.
//!
//! Durability is the [`FsyncPolicy`]'s; a flush ([`RoomStore::flush`]) returns a ticket that the
//! status reaches once what the room applied before it is *written* (its `write(2)` returned:
//! it survives the process being killed) or *durable* (under the policy: fsynced, so it
//! survives a power loss, unless the policy is `none`). A failed write is cut back and retried;
//! a failed fsync is never retried: the file is rewritten from the room's document (see
//! [`FileLog::rewrite`]) and nothing is reported durable until that rewrite's own fsyncs
//! succeeded. A ticket whose attempt failed is reported (`failed`), so a waiting flush raises
//! instead of waiting, while the store keeps retrying with backoff.

use std::panic::catch_unwind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;
use yrs::updates::decoder::Decode;
use yrs::Update;

use crate::awareness::MemberId;
use crate::protocol::{decode_frame, Message, EMPTY_UPDATE};
use crate::queue::{CloseReason, FrameQueue, QueueLimits};
use crate::room::{JoinKind, RoomCore};
use crate::runtime::runtime;
use crate::store::{FileLog, LoadReport, StoreError};
use crate::wake::Waker;

/// What a room's file is called: its escaped id, then this (the name the original's documented
/// seed pattern uses, so its data directories load as they are).
pub const ROOM_FILE_SUFFIX: &str = "_updates.y";
/// Longest file name we create (most filesystems allow 255 bytes).
pub const MAX_FILE_NAME: usize = 255;

/// After this many failed writes in a row while closing, the store gives up.
const CLOSE_ATTEMPTS: u32 = 3;

/// The most blocking threads the stores of a process use: the runtime's blocking pool is
/// bounded to this many (tokio's default is 512); file jobs beyond it wait in its queue, on
/// no thread.
pub use crate::runtime::MAX_BLOCKING_THREADS as MAX_FILE_JOBS;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot create the directory of {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `id` is the id's start only (an id may be as long as a URL), so messages stay short.
    #[error("room id {id} is too long to be stored: its file name would be {len} bytes once escaped, more than the limit of {MAX_FILE_NAME} bytes")]
    IdTooLong { id: String, len: usize },
    #[error("the store of {} stopped unexpectedly: {reason}", path.display())]
    Crashed { path: PathBuf, reason: String },
}

/// When a store fsyncs, and so what an acknowledged (durable) edit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Never fsync appends (not even on close): an edit is acknowledged once written; it
    /// survives the process being killed, and a power loss only once the kernel wrote it back
    /// (typically within 30 s). A squash's new file is still fsynced before its rename.
    None,
    /// fsync when a durable flush is asked for, and on close: an edit is acknowledged once a
    /// flush asked after it returned (or the store closed without error).
    #[default]
    Flush,
    /// fsync after every write, before reporting it: an edit is acknowledged (durable) as soon
    /// as it is reported written; edits that arrive during an fsync share the next one.
    Always,
}

impl FsyncPolicy {
    pub const NAMES: [&'static str; 3] = ["none", "flush", "always"];

    pub fn name(self) -> &'static str {
        match self {
            FsyncPolicy::None => "none",
            FsyncPolicy::Flush => "flush",
            FsyncPolicy::Always => "always",
        }
    }

    pub fn parse(name: &str) -> Option<FsyncPolicy> {
        match name {
            "none" => Some(FsyncPolicy::None),
            "flush" => Some(FsyncPolicy::Flush),
            "always" => Some(FsyncPolicy::Always),
            _ => None,
        }
    }
}

/// How a store writes.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// How long an update may wait for later ones to share its write (0: write at once).
    pub write_delay: Duration,
    /// Keep the file a single record: every write replaces it atomically with the merged content.
    pub squash: bool,
    /// Create the file's directory (and its parents) if missing.
    pub create_dirs: bool,
    /// Create a missing file at the first write rather than at open (see
    /// [`FileLog::open_lazy`]): a room that is never edited leaves no file.
    pub create_lazily: bool,
    /// When to fsync.
    pub fsync: FsyncPolicy,
    /// Bounds of the queue between the room and the writer; if the writer falls this far
    /// behind, it writes the whole document instead of what it missed.
    pub queue: QueueLimits,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            write_delay: Duration::ZERO,
            squash: false,
            create_dirs: false,
            create_lazily: false,
            fsync: FsyncPolicy::default(),
            queue: QueueLimits::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the file and applying it to the room.
    Loading,
    /// Writing what the room applies.
    Open,
    /// Could not open: `error` says why. Nothing was written.
    Failed,
    /// Closed: everything was written, and fsynced unless the policy is `none` (unless
    /// `error` says otherwise).
    Closed,
}

/// A snapshot of a store's progress.
#[derive(Debug, Clone)]
pub struct StoreStatus {
    pub phase: Phase,
    /// What opening found in the file.
    pub report: LoadReport,
    /// Every flush ticket up to this one is written (its `write(2)` returned).
    pub written: u64,
    /// Every flush ticket up to this one is durable under the policy (fsynced, unless the
    /// policy is `none`: then the same as `written`).
    pub durable: u64,
    /// The last ticket whose write, fsync or rewrite failed (the store retries; a ticket not
    /// yet written or durable, at or under this one, is failed for whoever waits on it).
    pub failed: u64,
    /// Writes done (each holds everything that was pending).
    pub writes: u64,
    /// fsyncs done (of appended records; a rewrite's are not counted).
    pub syncs: u64,
    /// Files rewritten from the document after an fsync failed.
    pub rewrites: u64,
    /// Why opening failed, or the last write error (cleared by the next good write).
    pub error: Option<Arc<PersistError>>,
}

struct Shared {
    path: PathBuf,
    status: Mutex<StoreStatus>,
    changed: Condvar,
    /// Wakes the owner (Python's eventfd) on every status change.
    waker: Option<Waker>,
    /// Wakes the writer task: frames queued, a flush asked for, the queue closed.
    wake_writer: Arc<Notify>,
    queue: Arc<FrameQueue>,
    /// The last ticket handed out.
    flush_asked: AtomicU64,
    /// The last ticket that asked for durability.
    sync_asked: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, StoreStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut StoreStatus)) {
        change(&mut self.lock());
        self.changed.notify_all();
        if let Some(waker) = &self.waker {
            waker.wake();
        }
    }
}

/// The handle on a room's store. Dropping it closes the store (which still writes what is left).
pub struct RoomStore {
    shared: Arc<Shared>,
    config: StoreConfig,
    core: Arc<RoomCore>,
}

impl std::fmt::Debug for RoomStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomStore")
            .field("path", &self.shared.path)
            .finish()
    }
}

impl RoomStore {
    /// Starts persisting `core` to `path` on the shared runtime: it loads the file (see the
    /// module doc), then writes until closed. Returns at once; `waker` is woken whenever the
    /// status changes (opened, failed, flushed, closed).
    pub fn attach(
        core: Arc<RoomCore>,
        path: impl Into<PathBuf>,
        config: StoreConfig,
        waker: Option<Waker>,
    ) -> RoomStore {
        let wake_writer = Arc::new(Notify::new());
        let queue = Arc::new(FrameQueue::new(
            config.queue,
            Waker::Tokio(wake_writer.clone()),
        ));
        let shared = Arc::new(Shared {
            path: path.into(),
            status: Mutex::new(StoreStatus {
                phase: Phase::Loading,
                report: LoadReport::default(),
                written: 0,
                durable: 0,
                failed: 0,
                writes: 0,
                syncs: 0,
                rewrites: 0,
                error: None,
            }),
            changed: Condvar::new(),
            waker,
            wake_writer,
            queue,
            flush_asked: AtomicU64::new(0),
            sync_asked: AtomicU64::new(0),
        });
        runtime().spawn(run(shared.clone(), core.clone(), config.clone()));
        RoomStore {
            shared,
            config,
            core,
        }
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn status(&self) -> StoreStatus {
        self.shared.lock().clone()
    }

    /// Asks for everything the room applied so far to be written now (without waiting for
    /// `write_delay`) and, with `durable`, made durable under the policy; returns the ticket
    /// that `StoreStatus::written` (and `durable`) reaches once it is, or `failed` if the
    /// attempt failed.
    pub fn flush(&self, durable: bool) -> u64 {
        // A barrier first: the room applies an update and queues it to every member under its
        // lock, so once we held that lock, an update that any member (`Room.doc`, a client)
        // has seen is in our queue too, and the ticket covers it. (Without it, a flush asked as
        // soon as the room's Python mirror saw an update could miss it: found by the kill -9
        // loop.)
        self.core.peer_count();
        let ticket = self.shared.flush_asked.fetch_add(1, Ordering::SeqCst) + 1;
        if durable {
            self.shared.sync_asked.fetch_max(ticket, Ordering::SeqCst);
        }
        self.shared.wake_writer.notify_one();
        ticket
    }

    /// Stops taking updates; what is pending is written (and fsynced, unless the policy is
    /// `none`), then the status is `Closed`. Never waits.
    pub fn close(&self) {
        self.shared.queue.close(CloseReason::normal());
    }

    /// Blocks until `done(status)` holds or the timeout passes (then `None`).
    pub fn wait_until(
        &self,
        timeout: Option<Duration>,
        done: impl Fn(&StoreStatus) -> bool,
    ) -> Option<StoreStatus> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let mut status = self.shared.lock();
        loop {
            if done(&status) {
                return Some(status.clone());
            }
            status = match deadline {
                None => self
                    .shared
                    .changed
                    .wait(status)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    self.shared
                        .changed
                        .wait_timeout(status, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

impl Drop for RoomStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// What a loaded store starts writing with.
struct Loaded {
    log: FileLog,
    member: MemberId,
    /// What the room had that the file lacked.
    pending: Vec<Bytes>,
    report: LoadReport,
}

async fn run(shared: Arc<Shared>, core: Arc<RoomCore>, config: StoreConfig) {
    let loaded = {
        let (shared, core, config) = (shared.clone(), core.clone(), config.clone());
        tokio::task::spawn_blocking(move || load(&core, &shared.path, &config, &shared.queue)).await
    };
    let loaded = match loaded {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(error)) => return fail(&shared, error),
        Err(join) => {
            let error = PersistError::Crashed {
                path: shared.path.clone(),
                reason: join.to_string(),
            };
            return fail(&shared, error);
        }
    };
    let report = loaded.report;
    shared.update(|s| {
        s.phase = Phase::Open;
        s.report = report;
    });
    let member = loaded.member;
    write_until_closed(&shared, &core, &config, loaded).await;
    core.leave(member);
    shared.update(|s| s.phase = Phase::Closed);
}

fn fail(shared: &Shared, error: PersistError) {
    // The owner is told through the status (Python raises it): a debug line is enough here.
    tracing::debug!(path = %shared.path.display(), %error, "cannot open the room's store");
    shared.queue.close(CloseReason::normal());
    shared.update(|s| {
        s.phase = Phase::Failed;
        s.error = Some(Arc::new(error));
    });
}

/// Blocking: opens the log, joins the room, writes down what the room has that the file
/// lacks, and applies the file to the room.
fn load(
    core: &RoomCore,
    path: &Path,
    config: &StoreConfig,
    queue: &Arc<FrameQueue>,
) -> Result<Loaded, PersistError> {
    if config.create_dirs {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| PersistError::CreateDir {
                path: path.to_path_buf(),
                source,
            })?;
        }
    }
    let (log, records, report) = if config.create_lazily {
        FileLog::open_lazy(path, config.squash)?
    } else {
        FileLog::open(path, config.squash)?
    };
    let records: Vec<Bytes> = records.into_iter().map(Bytes::from).collect();
    let file_update = match records.len() {
        0 => None,
        1 => Some(records[0].clone()),
        _ => catch_unwind(|| yrs::merge_updates_v1(&records))
            .ok()
            .and_then(Result::ok)
            .map(Bytes::from),
    };
    let file_state = match &file_update {
        Some(update) => catch_unwind(|| Update::decode_v1(update).map(|u| u.state_vector()))
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
        // Unmergeable records (not seen in practice): diff against nothing, i.e. write the
        // whole room; a duplicate is harmless.
        None => Default::default(),
    };
    let member = core.join(queue.clone(), JoinKind::Mirror);
    // The room queued its whole document for us; we only need what the file lacks, and the
    // diff below, taken after joining, also covers whatever arrives meanwhile.
    queue.drain();
    let diff = core.encode_diff(&file_state);
    let pending = if diff == EMPTY_UPDATE {
        Vec::new()
    } else {
        vec![Bytes::from(diff)]
    };
    let applied = match file_update {
        Some(update) => core.handle(member, Message::Update(update)).is_ok(),
        None => records.is_empty(),
    };
    if !applied {
        // Too large or unmergeable as one: apply record by record, skipping what the room
        // refuses (it stays in the file).
        for (index, record) in records.into_iter().enumerate() {
            if let Err(error) = core.handle(member, Message::Update(record)) {
                tracing::warn!(path = %path.display(), index, %error, "skipped a record the room refused");
            }
        }
    }
    Ok(Loaded {
        log,
        member,
        pending,
        report,
    })
}

/// What one pass of the writer does.
enum Job {
    /// Append what was pending, then fsync if `sync`.
    Append { updates: Vec<Bytes>, sync: bool },
    /// An fsync failed: replace the file by the room's whole document (merged with what the
    /// file holds), fsynced. It also writes everything pending.
    Rewrite,
    /// fsync what was written.
    Sync,
}

/// The writer's progress, published in the status.
#[derive(Default)]
struct Progress {
    written: u64,
    durable: u64,
    failed: u64,
    /// Records were written since the last good fsync.
    dirty: bool,
}

/// The writer loop: runs until the queue is closed and what was pending is written (or
/// writing it failed `CLOSE_ATTEMPTS` times in a row while closing).
async fn write_until_closed(
    shared: &Arc<Shared>,
    core: &Arc<RoomCore>,
    config: &StoreConfig,
    loaded: Loaded,
) {
    let policy = config.fsync;
    let mut log = loaded.log;
    let mut pending = loaded.pending;
    let mut since = (!pending.is_empty()).then(Instant::now);
    let mut retry_at: Option<Instant> = None;
    let mut failures = 0u32;
    let mut progress = Progress::default();
    let mut closing = false;
    loop {
        // Read before draining: every frame queued before a ticket was taken is drained now.
        let asked = shared.flush_asked.load(Ordering::SeqCst);
        let sync_asked = shared.sync_asked.load(Ordering::SeqCst).min(asked);
        let drained = shared.queue.drain();
        if drained.overflowed {
            // We fell behind and frames were dropped: the whole document replaces them.
            pending.push(Bytes::from(core.encode_state_as_update()));
        }
        collect(&drained.frames, &mut pending);
        closing |= drained.closed.is_some();
        let want_sync = policy != FsyncPolicy::None && (sync_asked > progress.durable || closing);
        let owed = !pending.is_empty() || asked > progress.written || want_sync;
        let job = if log.needs_rewrite() && owed {
            Some(Job::Rewrite)
        } else if !pending.is_empty() {
            Some(Job::Append {
                updates: Vec::new(),
                sync: policy == FsyncPolicy::Always || want_sync,
            })
        } else if want_sync && progress.dirty {
            Some(Job::Sync)
        } else {
            None
        };
        let Some(mut job) = job else {
            // Nothing to write: every ticket is written, and durable unless written records
            // still wait for an fsync that nobody asked for yet.
            let before = (progress.written, progress.durable);
            progress.written = asked;
            if !progress.dirty || policy == FsyncPolicy::None {
                progress.durable = asked;
            }
            if (progress.written, progress.durable) != before {
                publish(shared, &progress, |_| {});
            }
            if closing {
                return;
            }
            shared.wake_writer.notified().await;
            continue;
        };
        let now = Instant::now();
        let mut due = now;
        if matches!(job, Job::Append { .. }) && !(closing || asked > progress.written || want_sync)
        {
            due = *since.get_or_insert(now) + config.write_delay;
        }
        // A new ticket is tried at once; the store's own retries back off.
        if let Some(retry_at) = retry_at.filter(|_| asked <= progress.failed) {
            due = due.max(retry_at);
        }
        if due > now {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = shared.wake_writer.notified() => {}
            }
            continue;
        }
        if let Job::Append { updates, .. } = &mut job {
            *updates = std::mem::take(&mut pending);
        }
        let squash = config.squash;
        let state_of = core.clone();
        let done = tokio::task::spawn_blocking(move || {
            // `wrote`: the records are in the file, whatever came next.
            let (wrote, mut result) = match &job {
                Job::Append { updates, sync } => match write(&mut log, updates, squash) {
                    Ok(()) if *sync && !squash => (true, log.sync()),
                    Ok(()) => (true, Ok(())),
                    Err(error) => (false, Err(error)),
                },
                Job::Rewrite => (false, log.rewrite(&state_of.encode_state_as_update())),
                Job::Sync => (false, log.sync()),
            };
            let mut rewrote = matches!(job, Job::Rewrite) && result.is_ok();
            if let Err(error) = &result {
                if log.needs_rewrite() && !matches!(job, Job::Rewrite) {
                    // The fsync failed: what the file holds since the last good one is
                    // unknown. Rewrite it from the document at once (a new file, fsynced,
                    // renamed over it); only if that fails too is the attempt failed.
                    tracing::warn!(path = %log.path().display(), %error, "fsync failed: rewriting the file from the document");
                    result = log.rewrite(&state_of.encode_state_as_update());
                    rewrote = result.is_ok();
                }
            }
            (log, job, wrote, rewrote, result)
        })
        .await;
        let (back, job, wrote, rewrote, result) = match done {
            Ok(done) => done,
            Err(join) => {
                let error = PersistError::Crashed {
                    path: shared.path.clone(),
                    reason: join.to_string(),
                };
                tracing::error!(%error, "the room's store stopped; updates are no longer written");
                shared.update(|s| s.error = Some(Arc::new(error)));
                // Leave the room now, or its queue would fill up for nobody.
                shared.queue.close(CloseReason::normal());
                return;
            }
        };
        log = back;
        match result {
            Ok(()) => {
                since = None;
                retry_at = None;
                failures = 0;
                progress.written = asked;
                let (wrote, synced) = match job {
                    Job::Append { sync, .. } => (1, u64::from(sync && !squash && !rewrote)),
                    Job::Rewrite => (0, 0),
                    Job::Sync => (0, u64::from(!rewrote)),
                };
                if rewrote {
                    // The document it wrote holds everything pending.
                    pending.clear();
                }
                // A squash's new file, like a rewrite, was fsynced before its rename.
                progress.dirty = synced == 0 && !rewrote && !squash;
                if !progress.dirty || policy == FsyncPolicy::None {
                    progress.durable = asked;
                }
                publish(shared, &progress, |s| {
                    s.writes += wrote;
                    s.syncs += synced;
                    s.rewrites += u64::from(rewrote);
                    s.error = None;
                });
            }
            Err(error) => {
                failures += 1;
                progress.failed = asked;
                match job {
                    Job::Append { mut updates, .. } if !wrote => {
                        updates.append(&mut pending);
                        pending = updates;
                    }
                    Job::Append { .. } | Job::Sync => {
                        // Only the fsync failed: the records are in the file, and the rewrite
                        // that must come next writes the whole document. Under `always`,
                        // written means fsynced.
                        progress.dirty = true;
                        if policy != FsyncPolicy::Always {
                            progress.written = asked;
                        }
                    }
                    Job::Rewrite => {}
                }
                let what = if log.needs_rewrite() {
                    "rewriting the file failed: will retry"
                } else {
                    "write failed: will retry"
                };
                tracing::warn!(path = %shared.path.display(), %error, failures, "{what}");
                let error = Arc::new(PersistError::from(error));
                publish(shared, &progress, |s| s.error = Some(error.clone()));
                if closing && failures >= CLOSE_ATTEMPTS {
                    tracing::error!(
                        path = %shared.path.display(),
                        updates = pending.len(),
                        "giving up: the room's last updates may not be on disk"
                    );
                    return;
                }
                let backoff = Duration::from_millis(50u64 << failures.min(7));
                retry_at = Some(Instant::now() + backoff);
            }
        }
    }
}

fn publish(shared: &Shared, progress: &Progress, more: impl FnOnce(&mut StoreStatus)) {
    shared.update(|s| {
        s.written = progress.written;
        s.durable = progress.durable;
        s.failed = progress.failed;
        more(s);
    });
}

/// The document updates of the frames the room sent us.
fn collect(frames: &[Bytes], pending: &mut Vec<Bytes>) {
    for frame in frames {
        let messages = match decode_frame(frame) {
            Ok(messages) => messages,
            // The room encodes every frame itself: this cannot happen.
            Err(error) => {
                tracing::error!(%error, "the room sent the store a malformed frame");
                continue;
            }
        };
        for message in messages {
            if let Message::SyncStep2(update) | Message::Update(update) = message {
                if update.as_ref() != EMPTY_UPDATE {
                    pending.push(update);
                }
            }
        }
    }
}

/// Blocking: appends `updates`, merged into one record when they merge.
fn write(log: &mut FileLog, updates: &[Bytes], squash: bool) -> Result<(), StoreError> {
    // A squashing log merges everything itself.
    if !squash && updates.len() > 1 {
        let merged = catch_unwind(|| yrs::merge_updates_v1(updates))
            .ok()
            .and_then(Result::ok);
        if let Some(merged) = merged {
            match log.append(&[&merged]) {
                Err(StoreError::InvalidUpdate { .. }) => {}
                other => return other,
            }
        }
    }
    let mut records: Vec<&[u8]> = updates.iter().map(|u| u.as_ref()).collect();
    loop {
        match log.append(&records) {
            // The room applied each of them, so this cannot happen; never retry it forever.
            Err(StoreError::InvalidUpdate { index, .. }) if index < records.len() => {
                tracing::error!(path = %log.path().display(), "dropped an update that is not a valid v1 update");
                records.remove(index);
            }
            other => return other,
        }
    }
}

/// The file name of a room: its id escaped, then [`ROOM_FILE_SUFFIX`].
///
/// ASCII letters, digits, `-`, `_` and `.` stay as they are, except a leading `.`; every other
/// byte of the UTF-8 id (`/`, `\`, `%`, NUL, spaces, non-ASCII...) becomes `%XX` (upper-case hex).
/// So a name never holds a separator or NUL, never starts with `.` (no `.`, `..` or hidden
/// file), and the mapping is reversible ([`room_id_from_file_name`]); plain ids keep the name
/// the original's documented pattern gives them (`my-room` → `my-room_updates.y`).
pub fn room_file_name(id: &str) -> Result<String, PersistError> {
    let mut name = String::with_capacity(id.len() + ROOM_FILE_SUFFIX.len());
    for (i, byte) in id.bytes().enumerate() {
        let plain =
            byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' || (byte == b'.' && i > 0);
        if plain {
            name.push(char::from(byte));
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    name.push_str(ROOM_FILE_SUFFIX);
    if name.len() > MAX_FILE_NAME {
        return Err(PersistError::IdTooLong {
            id: id_preview(id),
            len: name.len(),
        });
    }
    Ok(name)
}

/// How an error names a room id: its first 32 characters, quoted, and its length if cut.
fn id_preview(id: &str) -> String {
    const SHOWN: usize = 32;
    match id.char_indices().nth(SHOWN) {
        None => format!("{id:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &id[..cut], id.len()),
    }
}

/// The room id a file name was made from, if it is one [`room_file_name`] makes.
pub fn room_id_from_file_name(name: &str) -> Option<String> {
    let escaped = name.strip_suffix(ROOM_FILE_SUFFIX)?;
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut rest = escaped.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    let id = String::from_utf8(bytes).ok()?;
    // Only canonical names: the one name each id maps to.
    (room_file_name(&id).ok()?.as_str() == name).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::RoomLimits;
    use crate::store::encode_records;
    use crate::wake::Waker;
    use yrs::{Doc, GetString, Text, Transact};

    const WAIT: Option<Duration> = Some(Duration::from_secs(10));

    fn edits(client: u64, parts: &[&str]) -> Vec<Bytes> {
        let doc = Doc::with_client_id(client);
        let text = doc.get_or_insert_text("t");
        parts
            .iter()
            .map(|p| {
                let mut txn = doc.transact_mut();
                let end = text.len(&txn);
                text.insert(&mut txn, end, p);
                Bytes::from(txn.encode_update_v1())
            })
            .collect()
    }

    fn text_of(update: &[u8]) -> String {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        txn.apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
        text.get_string(&txn)
    }

    fn file_records(path: &Path) -> Vec<Vec<u8>> {
        FileLog::open(path, false).unwrap().1
    }

    fn file_text(path: &Path) -> String {
        let records = file_records(path);
        let merged = yrs::merge_updates_v1(&records).unwrap();
        text_of(&merged)
    }

    /// A peer member of the room, to send it updates as a client would.
    fn peer(core: &RoomCore) -> MemberId {
        let queue = Arc::new(FrameQueue::new(
            QueueLimits::default(),
            Waker::Tokio(Arc::new(Notify::new())),
        ));
        core.join(queue, JoinKind::Peer)
    }

    fn opened(store: &RoomStore) -> StoreStatus {
        store
            .wait_until(WAIT, |s| s.phase != Phase::Loading)
            .unwrap()
    }

    fn closed(store: &RoomStore) -> StoreStatus {
        store.close();
        store
            .wait_until(WAIT, |s| s.phase == Phase::Closed)
            .unwrap()
    }

    fn write_file(path: &Path, updates: &[Bytes]) {
        let mut data = b"0.0.1\0".to_vec();
        let refs: Vec<&[u8]> = updates.iter().map(|u| u.as_ref()).collect();
        data.extend(encode_records(&refs));
        std::fs::write(path, data).unwrap();
    }

    #[test]
    fn the_file_is_loaded_into_the_room_and_updates_are_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r_updates.y");
        write_file(&path, &edits(1, &["hello", " world"]));
        let core = RoomCore::new("r", RoomLimits::default());
        let store = RoomStore::attach(core.clone(), &path, StoreConfig::default(), None);
        let status = opened(&store);
        assert_eq!(status.phase, Phase::Open);
        assert_eq!(status.report.records, 2);
        assert_eq!(text_of(&core.encode_state_as_update()), "hello world");

        let member = peer(&core);
        let more = edits(2, &["!", "?"]);
        for update in &more {
            core.handle(member, Message::Update(update.clone()))
                .unwrap();
        }
        let ticket = store.flush(true);
        store.wait_until(WAIT, |s| s.durable >= ticket).unwrap();
        let text = file_text(&path);
        assert!(
            text.starts_with("hello world") && text.contains("!?"),
            "{text}"
        );
        let status = closed(&store);
        assert!(status.error.is_none());
        assert_eq!(core.peer_count(), 1, "the store is a mirror, not a peer");
    }

    #[test]
    fn what_the_room_has_that_the_file_lacks_is_written_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r_updates.y");
        write_file(&path, &edits(1, &["file"]));
        let core = RoomCore::new("r", RoomLimits::default());
        let member = peer(&core);
        core.handle(member, Message::Update(edits(2, &["room"])[0].clone()))
            .unwrap();
        let store = RoomStore::attach(core.clone(), &path, StoreConfig::default(), None);
        opened(&store);
        closed(&store);
        let records = file_records(&path);
        assert_eq!(records.len(), 2, "the file's record, then the room's diff");
        assert_eq!(text_of(&records[1]), "room");
        let text = file_text(&path);
        assert!(text.contains("file") && text.contains("room"));
        assert_eq!(
            text_of(&core.encode_state_as_update()),
            text,
            "the room got the file's content"
        );
    }

    #[test]
    fn write_delay_coalesces_and_close_writes_what_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r_updates.y");
        let (core, store, member) = store_with_delay(
            &path,
            StoreConfig::default().fsync,
            Duration::from_secs(3600),
        );
        for update in edits(3, &["a", "b", "c", "d"]) {
            core.handle(member, Message::Update(update)).unwrap();
        }
        assert_eq!(store.status().writes, 0);
        assert!(
            file_records(&path).is_empty(),
            "nothing written within the delay"
        );
        let status = closed(&store);
        assert_eq!(status.writes, 1);
        let records = file_records(&path);
        assert_eq!(records.len(), 1, "four updates, one record");
        assert_eq!(text_of(&records[0]), "abcd");
    }

    #[test]
    fn a_flush_does_not_wait_for_the_delay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r_updates.y");
        let (core, store, member) = store_with_delay(
            &path,
            StoreConfig::default().fsync,
            Duration::from_secs(3600),
        );
        core.handle(member, Message::Update(edits(4, &["x"])[0].clone()))
            .unwrap();
        let ticket = store.flush(true);
        let status = store.wait_until(WAIT, |s| s.durable >= ticket).unwrap();
        assert_eq!(status.writes, 1);
        assert_eq!(file_text(&path), "x");
        // Nothing pending: a flush is done without writing.
        let ticket = store.flush(true);
        let status = store.wait_until(WAIT, |s| s.durable >= ticket).unwrap();
        assert_eq!(status.writes, 1);
    }

    #[test]
    fn squash_keeps_one_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r_updates.y");
        write_file(&path, &edits(5, &["a", "b", "c"]));
        let core = RoomCore::new("r", RoomLimits::default());
        let config = StoreConfig {
            squash: true,
            ..StoreConfig::default()
        };
        let store = RoomStore::attach(core.clone(), &path, config, None);
        assert_eq!(opened(&store).report.records, 3);
        assert_eq!(file_records(&path).len(), 1);
        let member = peer(&core);
        for update in edits(6, &["1", "2"]) {
            core.handle(member, Message::Update(update)).unwrap();
            let ticket = store.flush(true);
            store.wait_until(WAIT, |s| s.durable >= ticket).unwrap();
        }
        closed(&store);
        assert_eq!(file_records(&path).len(), 1);
        let text = file_text(&path);
        assert!(text.contains("abc") && text.contains("12"), "{text}");
    }

    #[test]
    fn a_version_mismatch_fails_the_open_and_leaves_the_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r_updates.y");
        std::fs::write(&path, b"0.0.2\x00\x02\x00\x00").unwrap();
        let core = RoomCore::new("r", RoomLimits::default());
        let store = RoomStore::attach(core.clone(), &path, StoreConfig::default(), None);
        let status = opened(&store);
        assert_eq!(status.phase, Phase::Failed);
        let error = status.error.unwrap();
        assert!(matches!(
            &*error,
            PersistError::Store(StoreError::VersionMismatch { .. })
        ));
        assert_eq!(
            error.to_string(),
            r#"File version mismatch (got "0.0.2", expected "0.0.1")"#
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"0.0.2\x00\x02\x00\x00");
    }

    #[test]
    fn a_torn_tail_is_cut_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r_updates.y");
        let updates = edits(7, &["kept", "torn"]);
        write_file(&path, &updates);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 2).unwrap();
        let core = RoomCore::new("r", RoomLimits::default());
        let store = RoomStore::attach(core.clone(), &path, StoreConfig::default(), None);
        let status = opened(&store);
        assert_eq!(status.report.records, 1);
        let record = crate::record::record_len(updates[1].len()) as u64;
        assert_eq!(status.report.torn_bytes, record - 2);
        assert_eq!(text_of(&core.encode_state_as_update()), "kept");
    }

    #[test]
    fn a_writer_that_falls_behind_writes_the_whole_document() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r_updates.y");
        let core = RoomCore::new("r", RoomLimits::default());
        let config = StoreConfig {
            write_delay: Duration::from_secs(3600),
            queue: QueueLimits {
                max_frames: 2,
                max_bytes: 1 << 20,
            },
            ..StoreConfig::default()
        };
        let store = RoomStore::attach(core.clone(), &path, config, None);
        opened(&store);
        let member = peer(&core);
        for update in edits(8, &["a", "b", "c", "d", "e"]) {
            core.handle(member, Message::Update(update)).unwrap();
        }
        closed(&store);
        assert_eq!(file_text(&path), "abcde");
    }

    #[test]
    fn dropping_the_handle_closes_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let core = RoomCore::new("r", RoomLimits::default());
        let config = StoreConfig {
            write_delay: Duration::from_secs(3600),
            create_dirs: true,
            ..StoreConfig::default()
        };
        let nested = dir.path().join("a/b").join(room_file_name("r").unwrap());
        let store = RoomStore::attach(core.clone(), &nested, config, None);
        opened(&store);
        let member = peer(&core);
        core.handle(member, Message::Update(edits(9, &["bye"])[0].clone()))
            .unwrap();
        drop(store);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while file_records(&nested).is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(file_text(&nested), "bye");
    }

    #[test]
    fn room_ids_never_escape_the_directory() {
        let cases = [
            ("my-room", "my-room_updates.y"),
            ("notes.v2", "notes.v2_updates.y"),
            ("", "_updates.y"),
            ("..", "%2E._updates.y"),
            (".", "%2E_updates.y"),
            (".hidden", "%2Ehidden_updates.y"),
            ("../etc/passwd", "%2E.%2Fetc%2Fpasswd_updates.y"),
            ("a/b", "a%2Fb_updates.y"),
            ("a\\b", "a%5Cb_updates.y"),
            ("nul\0byte", "nul%00byte_updates.y"),
            ("100%", "100%25_updates.y"),
            ("é", "%C3%A9_updates.y"),
            ("a b", "a%20b_updates.y"),
        ];
        for (id, name) in cases {
            assert_eq!(room_file_name(id).unwrap(), name, "{id:?}");
            assert_eq!(room_id_from_file_name(name).as_deref(), Some(id));
            let path = Path::new("/data").join(name);
            assert_eq!(path.parent(), Some(Path::new("/data")), "{id:?}");
            assert!(!name.starts_with('.') && !name.contains('/') && !name.contains('\0'));
        }
        assert!(matches!(
            room_file_name(&"x".repeat(300)),
            Err(PersistError::IdTooLong { .. })
        ));
        assert_eq!(
            room_id_from_file_name("a%2fb_updates.y"),
            None,
            "not canonical"
        );
        assert_eq!(room_id_from_file_name("a%2_updates.y"), None);
        assert_eq!(room_id_from_file_name("other.y"), None);
    }

    fn store_with(path: &Path, fsync: FsyncPolicy) -> (Arc<RoomCore>, RoomStore, MemberId) {
        store_with_delay(path, fsync, Duration::ZERO)
    }

    /// With a long `write_delay`, nothing is written until a flush asks: a test's fault hits
    /// the write it means, not one the writer started on its own.
    fn store_with_delay(
        path: &Path,
        fsync: FsyncPolicy,
        write_delay: Duration,
    ) -> (Arc<RoomCore>, RoomStore, MemberId) {
        let core = RoomCore::new("r", RoomLimits::default());
        let config = StoreConfig {
            fsync,
            write_delay,
            ..StoreConfig::default()
        };
        let store = RoomStore::attach(core.clone(), path, config, None);
        assert_eq!(opened(&store).phase, Phase::Open);
        let member = peer(&core);
        (core, store, member)
    }

    /// Waits for a ticket: `Ok(status)` once written (or durable), `Err(status)` if failed.
    fn wait_ticket(
        store: &RoomStore,
        ticket: u64,
        durable: bool,
    ) -> Result<StoreStatus, StoreStatus> {
        let status = store
            .wait_until(WAIT, |s| {
                let done = if durable { s.durable } else { s.written };
                done >= ticket || s.failed >= ticket
            })
            .unwrap();
        let done = if durable {
            status.durable
        } else {
            status.written
        };
        if done >= ticket {
            Ok(status)
        } else {
            Err(status)
        }
    }

    #[test]
    fn each_policy_fsyncs_when_it_says() {
        for (policy, syncs_after_writes, syncs_after_flush, syncs_after_close) in [
            (FsyncPolicy::None, 0, 0, 0),
            (FsyncPolicy::Flush, 0, 1, 1),
            (FsyncPolicy::Always, 3, 3, 3),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r_updates.y");
            let (core, store, member) = store_with(&path, policy);
            for update in edits(10, &["a", "b", "c"]) {
                core.handle(member, Message::Update(update)).unwrap();
                let ticket = store.flush(false);
                let status = wait_ticket(&store, ticket, false).unwrap();
                if policy != FsyncPolicy::Flush {
                    assert!(status.durable >= ticket, "{policy:?}: written is durable");
                }
            }
            assert_eq!(store.status().syncs, syncs_after_writes, "{policy:?}");
            let ticket = store.flush(true);
            let status = wait_ticket(&store, ticket, true).unwrap();
            assert_eq!(status.syncs, syncs_after_flush, "{policy:?}");
            // Nothing written since: a second durable flush needs no fsync.
            let ticket = store.flush(true);
            assert_eq!(
                wait_ticket(&store, ticket, true).unwrap().syncs,
                syncs_after_flush
            );
            let status = closed(&store);
            assert!(status.error.is_none());
            assert_eq!(status.syncs, syncs_after_close, "{policy:?}");
            assert_eq!(file_text(&path), "abc");
        }
    }

    #[test]
    fn a_failed_fsync_is_recovered_by_a_rewrite_before_the_flush_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r_updates.y");
        let (core, store, member) = store_with(&path, FsyncPolicy::Always);
        let updates = edits(15, &["a", "b"]);
        core.handle(member, Message::Update(updates[0].clone()))
            .unwrap();
        wait_ticket(&store, store.flush(true), true).unwrap();
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(&path).unwrap().ino();
        crate::store::faults::inject(&path, crate::store::faults::Op::Sync, 1, libc::EIO);
        core.handle(member, Message::Update(updates[1].clone()))
            .unwrap();
        let status = wait_ticket(&store, store.flush(true), true).unwrap();
        assert_eq!((status.syncs, status.rewrites, status.failed), (1, 1, 0));
        assert_ne!(std::fs::metadata(&path).unwrap().ino(), inode, "a new file");
        assert_eq!(file_records(&path).len(), 1);
        assert_eq!(file_text(&path), "ab");
        closed(&store);
    }

    #[test]
    fn a_failed_fsync_fails_the_flush_and_the_file_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r_updates.y");
        let (core, store, member) = store_with(&path, FsyncPolicy::Flush);
        let updates = edits(11, &["one", "two", "three"]);
        core.handle(member, Message::Update(updates[0].clone()))
            .unwrap();
        wait_ticket(&store, store.flush(true), true).unwrap();
        core.handle(member, Message::Update(updates[1].clone()))
            .unwrap();
        // The fsync fails, and so does the rewrite that follows at once (its temporary
        // file's fsync).
        crate::store::faults::inject(&path, crate::store::faults::Op::Sync, 2, libc::EIO);
        let ticket = store.flush(true);
        let failed = wait_ticket(&store, ticket, true).unwrap_err();
        assert_eq!(failed.failed, ticket);
        assert!(failed.durable < ticket, "not acknowledged");
        assert_eq!(
            failed.written, ticket,
            "it was written, just not made durable"
        );
        assert!(failed
            .error
            .unwrap()
            .to_string()
            .contains("Input/output error"));
        // The next durable flush rewrites the file from the room: never a second fsync of
        // the same file.
        core.handle(member, Message::Update(updates[2].clone()))
            .unwrap();
        let syncs = failed.syncs;
        let ticket = store.flush(true);
        let status = wait_ticket(&store, ticket, true).unwrap();
        assert_eq!((status.rewrites, status.syncs), (1, syncs));
        assert!(status.error.is_none());
        assert_eq!(
            file_records(&path).len(),
            1,
            "one record: the whole document"
        );
        assert_eq!(file_text(&path), "onetwothree");
        closed(&store);
        assert_eq!(file_text(&path), "onetwothree");
    }

    #[test]
    fn under_always_nothing_is_reported_written_before_its_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r_updates.y");
        let (core, store, member) =
            store_with_delay(&path, FsyncPolicy::Always, Duration::from_secs(3600));
        crate::store::faults::inject(&path, crate::store::faults::Op::Sync, 3, libc::EIO);
        core.handle(member, Message::Update(edits(12, &["x"])[0].clone()))
            .unwrap();
        // The first fsync fails, and so does the rewrite's (on its temporary file).
        let ticket = store.flush(false);
        let failed = wait_ticket(&store, ticket, false).unwrap_err();
        assert!(failed.written < ticket && failed.durable < ticket);
        // And the next rewrite's.
        let ticket = store.flush(false);
        let failed = wait_ticket(&store, ticket, false).unwrap_err();
        assert_eq!(failed.rewrites, 0);
        // Faults spent: the next try rewrites and is acknowledged.
        let ticket = store.flush(false);
        let status = wait_ticket(&store, ticket, false).unwrap();
        assert_eq!((status.durable, status.rewrites), (ticket, 1));
        closed(&store);
        assert_eq!(file_text(&path), "x");
    }

    #[test]
    fn a_failed_write_is_retried_without_a_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r_updates.y");
        let (core, store, member) =
            store_with_delay(&path, FsyncPolicy::None, Duration::from_secs(3600));
        let updates = edits(13, &["a", "b"]);
        core.handle(member, Message::Update(updates[0].clone()))
            .unwrap();
        wait_ticket(&store, store.flush(false), false).unwrap();
        crate::store::faults::inject(&path, crate::store::faults::Op::Write, 1, libc::ENOSPC);
        core.handle(member, Message::Update(updates[1].clone()))
            .unwrap();
        let ticket = store.flush(true);
        let failed = wait_ticket(&store, ticket, true).unwrap_err();
        assert!(failed.error.unwrap().to_string().contains("No space left"));
        let status = FileLog::open(&path, false).unwrap().2;
        assert_eq!(
            (status.records, status.torn_bytes),
            (1, 0),
            "the half record was undone"
        );
        let ticket = store.flush(true);
        wait_ticket(&store, ticket, true).unwrap();
        assert_eq!(file_text(&path), "ab");
        assert!(closed(&store).error.is_none());
    }

    #[test]
    fn closing_gives_up_after_repeated_failures_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r_updates.y");
        let (core, store, member) = store_with(&path, FsyncPolicy::Flush);
        crate::store::faults::inject(&path, crate::store::faults::Op::Write, 100, libc::EIO);
        core.handle(member, Message::Update(edits(14, &["lost"])[0].clone()))
            .unwrap();
        let status = closed(&store);
        assert!(status.error.is_some());
        crate::store::faults::clear(&path);
        assert_eq!(file_records(&path).len(), 0);
    }

    #[test]
    fn a_flush_covers_every_update_another_member_has_seen() {
        // The room queues an update to its members one after the other, in no set order,
        // from the thread that applied it. A flush asked as soon as another member saw the
        // update (as `FileRoom.flush()` after `Room.doc` saw it) must cover it. The delay
        // keeps an update the ticket missed off the disk, so a miss shows.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r_updates.y");
        let core = RoomCore::new("r", RoomLimits::default());
        let config = StoreConfig {
            write_delay: Duration::from_secs(3600),
            ..StoreConfig::default()
        };
        let store = RoomStore::attach(core.clone(), &path, config, None);
        opened(&store);
        let limits = QueueLimits {
            max_frames: 1 << 20,
            max_bytes: 1 << 30,
        };
        let watchers: Vec<Arc<FrameQueue>> = (0..3000)
            .map(|_| {
                let queue = Arc::new(FrameQueue::new(
                    limits,
                    Waker::Tokio(Arc::new(Notify::new())),
                ));
                core.join(queue.clone(), JoinKind::Mirror);
                queue.drain();
                queue
            })
            .collect();
        let sender = peer(&core);
        let parts: Vec<String> = (0..100).map(|i| format!("{i},")).collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let mut expected = String::new();
        for (i, update) in edits(17, &parts).into_iter().enumerate() {
            let room = core.clone();
            let applier = std::thread::spawn(move || room.handle(sender, Message::Update(update)));
            let watcher = &watchers[(i * 97) % watchers.len()];
            while watcher.drain().frames.is_empty() {
                std::hint::spin_loop();
            }
            let ticket = store.flush(false);
            wait_ticket(&store, ticket, false).unwrap();
            expected.push_str(parts[i]);
            assert_eq!(
                file_text(&path),
                expected,
                "update {i} acknowledged, not written"
            );
            applier.join().unwrap().unwrap();
            for w in &watchers {
                w.drain();
            }
        }
        closed(&store);
    }

    #[test]
    fn a_lazy_store_leaves_no_file_until_its_room_is_edited() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r_updates.y");
        for squash in [false, true] {
            let core = RoomCore::new("r", RoomLimits::default());
            let config = StoreConfig {
                create_lazily: true,
                squash,
                fsync: FsyncPolicy::Always,
                ..StoreConfig::default()
            };
            let store = RoomStore::attach(core.clone(), &path, config.clone(), None);
            assert_eq!(opened(&store).phase, Phase::Open);
            peer(&core);
            let ticket = store.flush(true);
            store.wait_until(WAIT, |s| s.durable >= ticket).unwrap();
            let status = closed(&store);
            assert!(status.error.is_none());
            assert_eq!((status.writes, status.syncs), (0, 0), "no write, no fsync");
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no file");
            // The first edit creates it.
            let store = RoomStore::attach(core.clone(), &path, config, None);
            opened(&store);
            let member = peer(&core);
            core.handle(member, Message::Update(edits(30, &["first"])[0].clone()))
                .unwrap();
            let ticket = store.flush(true);
            store.wait_until(WAIT, |s| s.durable >= ticket).unwrap();
            closed(&store);
            assert_eq!(file_text(&path), "first");
            std::fs::remove_file(&path).unwrap();
        }
        // A path that could never be written is refused at open, not at the first write.
        let core = RoomCore::new("r", RoomLimits::default());
        let config = StoreConfig {
            create_lazily: true,
            ..StoreConfig::default()
        };
        let missing = dir.path().join("missing").join("r_updates.y");
        let store = RoomStore::attach(core.clone(), &missing, config.clone(), None);
        let status = opened(&store);
        assert_eq!(status.phase, Phase::Failed);
        assert!(status.error.unwrap().to_string().contains("No such file"));
        let long = dir.path().join("r".repeat(256));
        let store = RoomStore::attach(core, &long, config, None);
        let status = opened(&store);
        assert_eq!(status.phase, Phase::Failed);
        let error = status.error.unwrap().to_string();
        assert!(error.contains("255 bytes"), "{error}");
    }

    #[test]
    fn a_long_room_id_is_refused_with_its_start_and_the_limit() {
        let id = "é".repeat(10_000);
        let error = room_file_name(&id).unwrap_err().to_string();
        assert!(
            error.contains("20000 bytes") && error.contains("limit of 255"),
            "{error}"
        );
        assert!(error.len() < 300, "{error}");
        let suffix = ROOM_FILE_SUFFIX.len();
        assert!(room_file_name(&"a".repeat(MAX_FILE_NAME - suffix)).is_ok());
        let error = room_file_name(&"a".repeat(MAX_FILE_NAME - suffix + 1)).unwrap_err();
        assert!(matches!(error, PersistError::IdTooLong { len: 256, .. }));
        // Escaping counts: 82 bytes that each become %XX are 246, plus the suffix.
        assert!(room_file_name(&" ".repeat(81)).is_ok());
        assert!(room_file_name(&" ".repeat(82)).is_err());
    }
}
