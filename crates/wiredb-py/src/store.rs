//! `FileStore`: a room core persisted to a file natively (see `wiredb_core::persist`), driven
//! from Python. Loading and writing run on tokio's blocking pool (at most
//! `persist::MAX_FILE_JOBS` jobs at once in the process); Python learns of progress
//! through the store's eventfd (`fd`, then `poll()`), or blocks in `wait()` without the GIL.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pyo3::prelude::*;
use wiredb_core::persist::{self, FsyncPolicy, Phase, RoomStore, StoreConfig, StoreStatus};
use wiredb_core::store::FILE_VERSION;
use wiredb_core::wake::{EventFd, Waker};

use crate::errors;
use crate::room::RoomCore;

#[pyclass(frozen, module = "wiredb._wiredb")]
pub struct FileStore {
    slot: Mutex<Slot>,
    path: std::path::PathBuf,
    fsync: &'static str,
    fd: Arc<EventFd>,
}

/// A store is let go of once its status is final: a Python object caught in a reference cycle
/// then holds neither a descriptor nor the room (its document) until it is collected.
enum Slot {
    Live(RoomStore),
    Done(StoreStatus),
}

impl FileStore {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl FileStore {
    /// Starts persisting `room` to `path`: the file is loaded into the room, then every update
    /// the room applies is appended. Returns at once; `poll()` tells when it is open.
    /// With `create_lazily`, a missing file is created at the first write, not now (a room
    /// that is never edited leaves no file).
    #[new]
    #[pyo3(signature = (room, path, write_delay = 0.0, squash = false, create_dirs = false, fsync = "flush", create_lazily = false))]
    fn new(
        room: &RoomCore,
        path: std::path::PathBuf,
        write_delay: f64,
        squash: bool,
        create_dirs: bool,
        fsync: &str,
        create_lazily: bool,
    ) -> PyResult<Self> {
        if !(write_delay >= 0.0 && write_delay.is_finite()) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "write_delay must be a finite number of seconds >= 0, not {write_delay}"
            )));
        }
        let fsync = FsyncPolicy::parse(fsync).ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "fsync must be one of {:?}, not {fsync:?}",
                FsyncPolicy::NAMES
            ))
        })?;
        let fd = Arc::new(EventFd::new().map_err(errors::io_error)?);
        let config = StoreConfig {
            write_delay: Duration::from_secs_f64(write_delay),
            squash,
            create_dirs,
            create_lazily,
            fsync,
            ..StoreConfig::default()
        };
        let store = RoomStore::attach(room.core()?, path, config, Some(Waker::Fd(fd.clone())));
        Ok(FileStore {
            path: store.path().to_path_buf(),
            fsync: store.config().fsync.name(),
            slot: Mutex::new(Slot::Live(store)),
            fd,
        })
    }

    /// Readable when the status changed since the last `poll()`.
    #[getter]
    fn fd(&self) -> i32 {
        self.fd.raw()
    }

    #[getter]
    fn path(&self) -> std::path::PathBuf {
        self.path.clone()
    }

    /// The fsync policy: "none", "flush" or "always".
    #[getter]
    fn fsync(&self) -> &'static str {
        self.fsync
    }

    /// The file format version this store reads and writes.
    #[classattr]
    fn version() -> &'static str {
        FILE_VERSION
    }

    /// The current status; makes `fd` unreadable until the next change.
    fn poll(&self, py: Python<'_>) -> StoreState {
        self.fd.clear();
        let mut slot = self.slot();
        let status = match &*slot {
            Slot::Live(store) => store.status(),
            Slot::Done(status) => return StoreState(status.clone()),
        };
        if matches!(status.phase, Phase::Closed | Phase::Failed) {
            // Final: its task has ended and nothing will wake the fd again. Both go now (then
            // `fd` is -1 and `wait` returns at once).
            let done = std::mem::replace(&mut *slot, Slot::Done(status.clone()));
            drop(slot);
            self.fd.close();
            // The room's last holder may be this store: a large document is freed here.
            py.detach(|| drop(done));
        }
        StoreState(status)
    }

    /// Asks for everything the room applied so far to be written at once, and with `durable`
    /// made durable under the fsync policy; returns the ticket that `StoreState.written` (and
    /// `durable`) reaches when it is, or `StoreState.failed` if the attempt failed.
    #[pyo3(signature = (durable = false))]
    fn flush(&self, durable: bool) -> u64 {
        match &*self.slot() {
            Slot::Live(store) => store.flush(durable),
            // Never reached: the store is closed before writing it.
            Slot::Done(_) => u64::MAX,
        }
    }

    /// Stops taking updates; what is pending is written (and fsynced unless the policy is
    /// "none"), then the state is "closed". Never waits.
    fn close(&self) {
        if let Slot::Live(store) = &*self.slot() {
            store.close();
        }
    }

    /// Blocks (without the GIL) until the status changes or the timeout passes.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> bool {
        let timeout = timeout.map(|t| Duration::from_secs_f64(t.max(0.0)));
        py.detach(|| self.fd.wait(timeout))
    }
}

/// A snapshot of a `FileStore`'s progress.
#[pyclass(frozen, module = "wiredb._wiredb")]
pub struct StoreState(StoreStatus);

#[pymethods]
impl StoreState {
    /// "loading", "open", "failed" or "closed".
    #[getter]
    fn phase(&self) -> &'static str {
        match self.0.phase {
            Phase::Loading => "loading",
            Phase::Open => "open",
            Phase::Failed => "failed",
            Phase::Closed => "closed",
        }
    }

    /// Complete records found in the file when it was opened.
    #[getter]
    fn records(&self) -> usize {
        self.0.report.records
    }

    /// Bytes of a torn or garbage tail cut off the file when it was opened (and of holes
    /// skipped between good records).
    #[getter]
    fn torn_bytes(&self) -> u64 {
        self.0.report.torn_bytes
    }

    /// Records found with a valid checksum (the others are legacy records, without one).
    #[getter]
    fn checked(&self) -> usize {
        self.0.report.checked
    }

    /// Holes found between good records (skipped, and the file rewritten without them).
    #[getter]
    fn holes(&self) -> usize {
        self.0.report.holes
    }

    /// Every flush ticket up to this one is written (its `write(2)` returned).
    #[getter]
    fn written(&self) -> u64 {
        self.0.written
    }

    /// Every flush ticket up to this one is durable under the fsync policy.
    #[getter]
    fn durable(&self) -> u64 {
        self.0.durable
    }

    /// The last ticket whose write, fsync or rewrite failed (the store retries).
    #[getter]
    fn failed(&self) -> u64 {
        self.0.failed
    }

    /// Writes done so far.
    #[getter]
    fn writes(&self) -> u64 {
        self.0.writes
    }

    /// fsyncs of appended records done so far.
    #[getter]
    fn syncs(&self) -> u64 {
        self.0.syncs
    }

    /// Rewrites of the whole file done after a failed fsync.
    #[getter]
    fn rewrites(&self) -> u64 {
        self.0.rewrites
    }

    /// Why opening failed or the last write failed, if it did.
    #[getter]
    fn error(&self) -> Option<String> {
        self.0.error.as_ref().map(|e| e.to_string())
    }

    /// Raises why opening failed, or the last write error if the last write failed.
    fn check(&self) -> PyResult<()> {
        match &self.0.error {
            Some(error) => Err(errors::persist_error(error)),
            None => Ok(()),
        }
    }
}

/// The file name of a room's store: its id escaped so that it never leaves its directory.
#[pyfunction]
pub fn room_file_name(id: &str) -> PyResult<String> {
    persist::room_file_name(id).map_err(|e| errors::persist_error(&e))
}

/// The room id a file name was made from by `room_file_name`, or None.
#[pyfunction]
pub fn room_id_from_file_name(name: &str) -> Option<String> {
    persist::room_id_from_file_name(name)
}
