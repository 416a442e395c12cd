//! `RoomRegistry`: the rooms of a server by id (the native `Registry`), opened and closed by
//! Python through an eventfd-backed event queue, whatever the wires (WebSocket, pipe, memory).
//! `PendingJoin`: an in-process peer on its way into a room, awaited on an eventfd; it becomes
//! an `Endpoint` that holds the room open until it closes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pyo3::prelude::*;
use wiredb_core::queue::{CloseReason, FrameQueue, QueueLimits};
use wiredb_core::registry::{Lease, Registry, RegistryError, RoomHooks};
use wiredb_core::room::RoomLimits;
use wiredb_core::runtime::runtime;
use wiredb_core::wake::{EventFd, Waker};

use crate::endpoint::Endpoint;
use crate::errors;
use crate::room::RoomCore;

/// Time an in-process join may wait for its room to open (as the WebSocket server's).
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Events for Python: ("open", id), ("close", id), and ("stopped", "") from a wire that has
/// closed all its connections.
pub struct Events {
    queue: Mutex<VecDeque<(&'static str, String)>>,
    fd: EventFd,
}

impl Events {
    pub fn push(&self, kind: &'static str, id: &str) {
        // Once closed, nobody reads events: keep none.
        if self.fd.raw() < 0 {
            return;
        }
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((kind, id.to_owned()));
        self.fd.notify();
    }
}

impl RoomHooks for Events {
    fn open(&self, id: &str) {
        self.push("open", id);
    }

    fn close(&self, id: &str) {
        self.push("close", id);
    }
}

#[pyclass(frozen, module = "wiredb._wiredb")]
pub struct RoomRegistry {
    pub registry: Arc<Registry>,
    pub events: Arc<Events>,
}

#[pymethods]
impl RoomRegistry {
    #[new]
    #[pyo3(signature = (
        max_document_bytes = 256 << 20,
        max_awareness_state_bytes = 64 << 10,
        max_awareness_per_second = 60,
        max_waiting_bytes = 16 << 20,
    ))]
    fn new(
        max_document_bytes: usize,
        max_awareness_state_bytes: usize,
        max_awareness_per_second: u32,
        max_waiting_bytes: usize,
    ) -> PyResult<Self> {
        let limits = RoomLimits {
            max_document_bytes,
            max_awareness_state_bytes,
            max_awareness_per_second,
            max_waiting_bytes,
            ..RoomLimits::default()
        };
        let events = Arc::new(Events {
            queue: Mutex::new(VecDeque::new()),
            fd: EventFd::new().map_err(errors::io_error)?,
        });
        Ok(RoomRegistry {
            registry: Registry::new(Some(events.clone()), limits),
            events,
        })
    }

    /// Readable when `events()` has something.
    #[getter]
    fn fd(&self) -> i32 {
        self.events.fd.raw()
    }

    fn events(&self) -> Vec<(&'static str, String)> {
        self.events.fd.clear();
        self.events
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    /// The room asked for by an "open" event is ready: its waiting peers join it now.
    fn opened(&self, py: Python<'_>, id: &str, room: &RoomCore) -> PyResult<()> {
        let core = room.core()?;
        py.detach(|| self.registry.opened(id, core));
        Ok(())
    }

    /// The room `id` (`room`) failed: it is forgotten (the next join opens a fresh one) and
    /// its peers are closed with `code` and `reason`, as is any that was just joining it.
    /// Returns how many peers it closed.
    fn failed(
        &self,
        py: Python<'_>,
        id: &str,
        room: &RoomCore,
        code: u16,
        reason: String,
    ) -> usize {
        let Ok(core) = room.core() else {
            return 0;
        };
        py.detach(|| {
            // Forgotten first: no new join finds the failed room after its peers are closed.
            self.registry.failed(id, &core);
            core.close_peers(CloseReason::new(code, reason))
        })
    }

    fn open_failed(&self, py: Python<'_>, id: &str, reason: &str) {
        py.detach(|| self.registry.open_failed(id, reason));
    }

    /// The room asked for by a "close" event is closed.
    fn closed(&self, py: Python<'_>, id: &str) {
        py.detach(|| self.registry.closed(id));
    }

    fn open_rooms(&self) -> Vec<String> {
        self.registry.open_rooms()
    }

    /// Fails every join still waiting for a room (the rooms are no longer served).
    fn fail_waiters(&self, py: Python<'_>) {
        py.detach(|| self.registry.fail_waiters());
    }

    /// Closes the events descriptor now (the rooms are no longer served): later events are
    /// dropped, and an object kept alive by a reference cycle holds no descriptor.
    fn close(&self, py: Python<'_>) {
        py.detach(|| {
            self.registry.fail_waiters();
            self.events.fd.close();
            self.events
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        });
    }

    /// Starts joining room `id` as an in-process peer (opening it first if needed).
    fn join(&self, id: String) -> PyResult<PendingJoin> {
        let fd = Arc::new(EventFd::new().map_err(errors::io_error)?);
        let inbound = Arc::new(FrameQueue::new(
            QueueLimits::default(),
            Waker::Fd(fd.clone()),
        ));
        let state = Arc::new(Mutex::new(match self.registry.try_acquire(&id) {
            Some(lease) => JoinState::Ready(Ok(lease)),
            None => JoinState::Waiting,
        }));
        if matches!(*lock(&state), JoinState::Waiting) {
            let (registry, state, fd, id) =
                (self.registry.clone(), state.clone(), fd.clone(), id.clone());
            runtime().spawn(async move {
                let result = tokio::time::timeout(OPEN_TIMEOUT, registry.acquire(&id))
                    .await
                    .unwrap_or_else(|_| {
                        Err(RegistryError::OpenFailed {
                            id,
                            reason: "it took too long to open".into(),
                        })
                    });
                // If the join was abandoned, its lease is dropped with the last reference.
                *lock(&state) = JoinState::Ready(result);
                fd.notify();
            });
        }
        Ok(PendingJoin { fd, inbound, state })
    }
}

enum JoinState {
    Waiting,
    Ready(Result<Lease, RegistryError>),
    Taken,
}

fn lock(state: &Mutex<JoinState>) -> MutexGuard<'_, JoinState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// An in-process peer joining a room: wait for `fd` to be readable (unless `done`), then take
/// the `endpoint()`. The endpoint reuses the same fd.
#[pyclass(frozen, module = "wiredb._wiredb")]
pub struct PendingJoin {
    fd: Arc<EventFd>,
    inbound: Arc<FrameQueue>,
    state: Arc<Mutex<JoinState>>,
}

impl PendingJoin {
    fn take(&self) -> PyResult<Lease> {
        let mut state = lock(&self.state);
        match std::mem::replace(&mut *state, JoinState::Taken) {
            JoinState::Ready(Ok(lease)) => Ok(lease),
            JoinState::Ready(Err(error)) => {
                // Nothing will use it: closed now, not when the (failed) join is collected.
                self.fd.close();
                Err(errors::registry_error(&error))
            }
            JoinState::Waiting => {
                *state = JoinState::Waiting;
                Err(pyo3::exceptions::PyRuntimeError::new_err(
                    "the room is not open yet: wait for `fd`",
                ))
            }
            JoinState::Taken => Err(pyo3::exceptions::PyRuntimeError::new_err(
                "this join was already taken",
            )),
        }
    }
}

#[pymethods]
impl PendingJoin {
    /// Readable once the join is done.
    #[getter]
    fn fd(&self) -> i32 {
        self.fd.raw()
    }

    #[getter]
    fn done(&self) -> bool {
        !matches!(*lock(&self.state), JoinState::Waiting)
    }

    /// The room's new peer, holding the room open until it is closed. Raises ConnectionError
    /// if the room could not be opened.
    fn endpoint(&self, py: Python<'_>) -> PyResult<Endpoint> {
        let lease = self.take()?;
        Ok(py.detach(|| Endpoint::peer(self.fd.clone(), self.inbound.clone(), lease)))
    }

    /// Gives the join up but keeps the room open until a peer joins and leaves (a room asked
    /// for by id). Raises ConnectionError if the room could not be opened.
    fn keep_open(&self, py: Python<'_>) -> PyResult<()> {
        let lease = self.take()?;
        py.detach(|| drop(lease.keep_open()));
        // Nothing waits on it any more: closed now, not with the object.
        self.fd.close();
        Ok(())
    }
}
