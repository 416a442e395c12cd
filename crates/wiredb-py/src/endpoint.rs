//! `Endpoint`: a local document's link to the sync protocol, driven from Python. It is either a
//! client connection (WebSocket, pipe) or an in-process member of a room core. Python is woken
//! through the endpoint's eventfd and takes everything pending in one `receive()`.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use wiredb_core::awareness::MemberId;
use wiredb_core::client::{self, Keepalive, Outbound};
use wiredb_core::guard::GuardLimits;
use wiredb_core::pipe;
use wiredb_core::protocol::Message;
use wiredb_core::queue::{CloseReason, FrameQueue, QueueLimits};
use wiredb_core::registry::Lease;
use wiredb_core::room::{JoinKind, RoomCore};
use wiredb_core::runtime::runtime;
use wiredb_core::sync::{self, Batch as CoreBatch};
use wiredb_core::wake::{EventFd, Waker};

use crate::errors;

enum Link {
    /// A client connection pumped by tokio (WebSocket, pipe).
    Remote(Arc<Outbound>),
    Member {
        core: Arc<RoomCore>,
        member: MemberId,
        /// A peer that joined through a registry holds its room open until it closes.
        lease: Mutex<Option<Lease>>,
    },
}

#[pyclass(frozen, module = "wiredb._wiredb")]
pub struct Endpoint {
    fd: Arc<EventFd>,
    inbound: Arc<FrameQueue>,
    link: Link,
    limits: GuardLimits,
}

fn inbound_queue() -> PyResult<(Arc<EventFd>, Arc<FrameQueue>)> {
    let fd = Arc::new(EventFd::new().map_err(errors::io_error)?);
    let queue = Arc::new(FrameQueue::new(
        QueueLimits::default(),
        Waker::Fd(fd.clone()),
    ));
    Ok((fd, queue))
}

impl Endpoint {
    /// A member of `core` whose frames come to Python.
    pub fn member(core: Arc<RoomCore>, kind: JoinKind) -> PyResult<Self> {
        let (fd, inbound) = inbound_queue()?;
        let member = core.join(inbound.clone(), kind);
        Ok(Endpoint {
            fd,
            inbound,
            link: Link::Member {
                core,
                member,
                lease: Mutex::new(None),
            },
            limits: GuardLimits::default(),
        })
    }

    /// A peer of the room `lease` holds, woken through `fd` (which `inbound` wakes).
    pub fn peer(fd: Arc<EventFd>, inbound: Arc<FrameQueue>, lease: Lease) -> Self {
        let core = lease.core().clone();
        let member = core.join(inbound.clone(), JoinKind::Peer);
        Endpoint {
            fd,
            inbound,
            link: Link::Member {
                core,
                member,
                lease: Mutex::new(Some(lease)),
            },
            limits: GuardLimits::default(),
        }
    }

    fn send(&self, py: Python<'_>, message: Message) -> PyResult<()> {
        match &self.link {
            Link::Remote(outbound) => {
                match message {
                    Message::Update(update) => outbound.send_update(update),
                    Message::Awareness(payload) => outbound.send_awareness(payload),
                    other => outbound.send_frame(other.encode()),
                };
                Ok(())
            }
            // A member that left (or was closed by its server) has no room to talk to.
            Link::Member { .. } if self.inbound.is_closed() => Ok(()),
            Link::Member { core, member, .. } => py
                .detach(|| core.handle(*member, message))
                .map_err(errors::room_error),
        }
    }
}

impl Drop for Endpoint {
    /// An endpoint dropped without `close()` still ends its connection or leaves its room.
    fn drop(&mut self) {
        match &self.link {
            Link::Remote(outbound) => outbound.close(CloseReason::normal()),
            // Not twice: `close` left already.
            Link::Member { core, member, .. } if !self.inbound.is_closed() => {
                core.leave(*member);
            }
            Link::Member { .. } => {}
        }
    }
}

/// A positive, finite number of seconds.
fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    match Duration::try_from_secs_f64(value) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "{name} must be a positive number of seconds, not {value}"
        ))),
    }
}

/// Takes ownership of a descriptor handed over by Python.
fn owned_fd(fd: i32) -> PyResult<OwnedFd> {
    // SAFETY: Python hands the descriptor over with the call (documented in `_wiredb.pyi`):
    // nothing else closes it afterwards.
    unsafe { pipe::adopt_fd(fd) }.map_err(errors::io_error)
}

#[pymethods]
impl Endpoint {
    /// Starts connecting to a WebSocket URL; the outcome arrives through `receive()`. The
    /// server is pinged after `ping_interval` seconds without hearing from it, and the
    /// connection is lost (1006) after `idle_timeout` seconds of silence (None: never).
    #[staticmethod]
    #[pyo3(signature = (
        url,
        headers,
        max_message_bytes = 64 << 20,
        ping_interval = Some(Keepalive::DEFAULT_PING_INTERVAL.as_secs_f64()),
        idle_timeout = Some(Keepalive::DEFAULT_IDLE_TIMEOUT.as_secs_f64()),
    ))]
    fn connect(
        url: &str,
        headers: Vec<(String, String)>,
        max_message_bytes: usize,
        ping_interval: Option<f64>,
        idle_timeout: Option<f64>,
    ) -> PyResult<Self> {
        let keepalive = Keepalive {
            ping_interval: ping_interval
                .map(|s| seconds("ping_interval", s))
                .transpose()?,
            idle_timeout: idle_timeout
                .map(|s| seconds("idle_timeout", s))
                .transpose()?,
        };
        let (fd, inbound) = inbound_queue()?;
        let limits = GuardLimits::default();
        let _entered = runtime().enter();
        let ws = client::connect(
            url,
            headers,
            inbound.clone(),
            max_message_bytes,
            limits,
            keepalive,
        );
        Ok(Endpoint {
            fd,
            inbound,
            link: Link::Remote(ws.outbound),
            limits,
        })
    }

    /// A pipe-wire connection over descriptors it takes ownership of (and closes when the
    /// connection ends, even on error): one socket when `sender == receiver`, else the sending
    /// and receiving ends (pipes or sockets).
    #[staticmethod]
    #[pyo3(signature = (sender, receiver, max_message_bytes = 64 << 20))]
    fn pipe(sender: i32, receiver: i32, max_message_bytes: usize) -> PyResult<Self> {
        let halves = {
            let _entered = runtime().enter();
            if sender == receiver {
                pipe::socket_halves(owned_fd(sender)?)
            } else {
                let sender = owned_fd(sender)?;
                pipe::fd_halves(owned_fd(receiver)?, sender)
            }
        };
        let (reader, writer) = halves.map_err(errors::io_error)?;
        let (fd, inbound) = inbound_queue()?;
        let limits = GuardLimits::default();
        let _entered = runtime().enter();
        let outbound = pipe::connect(reader, writer, inbound.clone(), max_message_bytes, limits);
        Ok(Endpoint {
            fd,
            inbound,
            link: Link::Remote(outbound),
            limits,
        })
    }

    /// Readable when `receive()` has something.
    #[getter]
    fn fd(&self) -> i32 {
        self.fd.raw()
    }

    /// Whether something sent was not yet written to the connection (a room member applies
    /// what it sends at once: never).
    #[getter]
    fn unsent(&self) -> bool {
        match &self.link {
            Link::Remote(outbound) => outbound.unsent(),
            Link::Member { .. } => false,
        }
    }

    /// Makes `fd` readable once nothing is `unsent` (at once if that is so already).
    fn wake_when_sent(&self) {
        let waiting = match &self.link {
            Link::Remote(outbound) => outbound.wake_when_sent(),
            Link::Member { .. } => false,
        };
        if !waiting {
            self.fd.notify();
        }
    }

    fn send_step1(&self, py: Python<'_>, state_vector: &[u8]) -> PyResult<()> {
        self.send(py, Message::SyncStep1(Bytes::copy_from_slice(state_vector)))
    }

    fn send_step2(&self, py: Python<'_>, update: &[u8]) -> PyResult<()> {
        self.send(py, Message::SyncStep2(Bytes::copy_from_slice(update)))
    }

    /// Sends a local update. Never waits: it is queued (and merged with other pending ones),
    /// or, for a room member, applied to the room at once.
    fn send_update(&self, py: Python<'_>, update: &[u8]) -> PyResult<()> {
        self.send(py, Message::Update(Bytes::copy_from_slice(update)))
    }

    fn send_awareness(&self, py: Python<'_>, payload: &[u8]) -> PyResult<()> {
        self.send(py, Message::Awareness(Bytes::copy_from_slice(payload)))
    }

    /// Asks the peer for every awareness state it knows (a room answers with its snapshot).
    fn send_query_awareness(&self, py: Python<'_>) -> PyResult<()> {
        self.send(py, Message::QueryAwareness)
    }

    /// Takes everything that arrived, pending updates merged into one.
    fn receive(&self, py: Python<'_>) -> Batch {
        py.detach(|| {
            self.fd.clear();
            let drained = self.inbound.drain();
            let frames = match (&self.link, drained.overflowed) {
                (Link::Member { core, .. }, true) => core.resync_frames(),
                _ => drained.frames,
            };
            Batch {
                batch: sync::absorb(&frames, &self.limits),
                closed: drained.closed,
            }
        })
    }

    /// Hands a raw frame to the room (a Python channel served by a room). Raises ValueError
    /// if the frame is malformed or its update is rejected.
    fn send_frame(&self, py: Python<'_>, frame: &[u8]) -> PyResult<()> {
        match &self.link {
            Link::Remote(outbound) => {
                outbound.send_frame(Bytes::copy_from_slice(frame));
                Ok(())
            }
            Link::Member { .. } if self.inbound.is_closed() => Ok(()),
            Link::Member { core, member, .. } => {
                let frame = Bytes::copy_from_slice(frame);
                py.detach(|| core.handle_frame(*member, &frame))
                    .map_err(errors::room_error)
            }
        }
    }

    /// Takes the raw frames queued for this member (a full resync if it fell behind), and the
    /// close reason once closed: what a served Python channel forwards.
    fn receive_frames<'py>(
        &self,
        py: Python<'py>,
    ) -> (Vec<Bound<'py, PyBytes>>, Option<(u16, String)>) {
        let (frames, closed) = py.detach(|| {
            self.fd.clear();
            let drained = self.inbound.drain();
            let frames = match (&self.link, drained.overflowed) {
                (Link::Member { core, .. }, true) => core.resync_frames(),
                _ => drained.frames,
            };
            (frames, drained.closed)
        });
        (to_bytes(py, &frames), closed.map(|c| (c.code, c.reason)))
    }

    /// Blocks (without the GIL) until `receive()` has something or the timeout passes.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> bool {
        let timeout = timeout.map(|t| Duration::from_secs_f64(t.max(0.0)));
        py.detach(|| self.fd.wait(timeout))
    }

    /// Sends what is queued, then closes. For a room member, leaves the room (and lets it
    /// close if it held it open).
    #[pyo3(signature = (code = 1000, reason = String::new()))]
    fn close(&self, py: Python<'_>, code: u16, reason: String) {
        match &self.link {
            Link::Remote(outbound) => outbound.close(CloseReason::new(code, reason)),
            Link::Member {
                core,
                member,
                lease,
            } => py.detach(|| {
                core.leave(*member);
                self.inbound.close(CloseReason::new(code, reason));
                let lease = lease.lock().unwrap_or_else(|e| e.into_inner()).take();
                drop(lease);
            }),
        }
    }

    /// Closes the endpoint's descriptor now rather than when the object is collected (a
    /// cancelled task may keep it in a reference cycle). Only once nothing waits on `fd`.
    fn release(&self) {
        self.fd.close();
    }
}

/// What one `receive()` took.
#[pyclass(frozen, module = "wiredb._wiredb")]
pub struct Batch {
    batch: CoreBatch,
    closed: Option<CloseReason>,
}

impl Batch {
    pub fn new(batch: CoreBatch, closed: Option<CloseReason>) -> Self {
        Batch { batch, closed }
    }
}

fn to_bytes<'py>(py: Python<'py>, items: &[Bytes]) -> Vec<Bound<'py, PyBytes>> {
    items.iter().map(|b| PyBytes::new(py, b)).collect()
}

#[pymethods]
impl Batch {
    #[getter]
    fn updates<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        to_bytes(py, &self.batch.updates)
    }

    #[getter]
    fn step1<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        to_bytes(py, &self.batch.step1)
    }

    #[getter]
    fn synced(&self) -> bool {
        self.batch.synced
    }

    #[getter]
    fn step2(&self) -> usize {
        self.batch.step2
    }

    #[getter]
    fn awareness<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        to_bytes(py, &self.batch.awareness)
    }

    #[getter]
    fn query_awareness(&self) -> bool {
        self.batch.query_awareness
    }

    #[getter]
    fn denied(&self) -> Option<String> {
        self.batch.denied.clone()
    }

    #[getter]
    fn errors(&self) -> Vec<String> {
        self.batch.errors.clone()
    }

    #[getter]
    fn closed(&self) -> Option<(u16, String)> {
        self.closed.as_ref().map(|c| (c.code, c.reason.clone()))
    }

    fn __bool__(&self) -> bool {
        !self.batch.is_empty() || self.closed.is_some()
    }
}
