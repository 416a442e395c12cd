//! `WebSocketServer`: the native server, with room opening and closing handed to Python (which
//! runs the user's room factory and the room's tasks) through an eventfd-backed event queue.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use wiredb_core::registry::{Registry, RoomHooks};
use wiredb_core::room::RoomLimits;
use wiredb_core::runtime::runtime;
use wiredb_core::server::{Server, ServerConfig};
use wiredb_core::wake::EventFd;

use crate::errors;
use crate::room::RoomCore;

/// How long `stop()` lets connections flush their queues before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Events for Python: ("open", id), ("close", id), ("stopped", "").
struct Events {
    queue: Mutex<VecDeque<(&'static str, String)>>,
    fd: EventFd,
}

impl Events {
    fn push(&self, kind: &'static str, id: &str) {
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
pub struct WebSocketServer {
    registry: Arc<Registry>,
    events: Arc<Events>,
    config: ServerConfig,
    server: Mutex<Option<Server>>,
}

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            PyValueError::new_err(format!("{name} must be a positive number of seconds"))
        })
}

#[pymethods]
impl WebSocketServer {
    #[new]
    #[pyo3(signature = (
        max_message_bytes = 64 << 20,
        max_connections = 10_000,
        ping_interval = 30.0,
        idle_timeout = 90.0,
        max_document_bytes = 256 << 20,
        max_awareness_state_bytes = 64 << 10,
        max_awareness_per_second = 60,
    ))]
    fn new(
        max_message_bytes: usize,
        max_connections: usize,
        ping_interval: f64,
        idle_timeout: f64,
        max_document_bytes: usize,
        max_awareness_state_bytes: usize,
        max_awareness_per_second: u32,
    ) -> PyResult<Self> {
        let room = RoomLimits {
            max_document_bytes,
            max_awareness_state_bytes,
            max_awareness_per_second,
            ..RoomLimits::default()
        };
        let config = ServerConfig {
            max_message_bytes,
            max_connections: max_connections.max(1),
            ping_interval: seconds("ping_interval", ping_interval)?,
            idle_timeout: seconds("idle_timeout", idle_timeout)?,
            room,
            ..ServerConfig::default()
        };
        let events = Arc::new(Events {
            queue: Mutex::new(VecDeque::new()),
            fd: EventFd::new().map_err(errors::io_error)?,
        });
        Ok(WebSocketServer {
            registry: Registry::new(Some(events.clone()), room),
            events,
            config,
            server: Mutex::new(None),
        })
    }

    /// Binds and starts serving; returns the bound port. Listening when this returns.
    fn start(&self, py: Python<'_>, host: &str, port: u16) -> PyResult<u16> {
        let addr = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let config = self.config.clone();
        let registry = self.registry.clone();
        let server = py
            .detach(|| runtime().block_on(Server::bind(&addr, registry, config)))
            .map_err(|e| errors::bind_error(&addr, e))?;
        let port = server.local_addr().port();
        *self.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(server);
        Ok(port)
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

    /// The room asked for by an "open" event is ready: its waiting clients join it now.
    fn opened(&self, py: Python<'_>, id: &str, room: &RoomCore) {
        let core = room.core.clone();
        py.detach(|| self.registry.opened(id, core));
    }

    fn open_failed(&self, id: &str, reason: &str) {
        self.registry.open_failed(id, reason);
    }

    /// The room asked for by a "close" event is closed.
    fn closed(&self, py: Python<'_>, id: &str) {
        py.detach(|| self.registry.closed(id));
    }

    fn open_rooms(&self) -> Vec<String> {
        self.registry.open_rooms()
    }

    /// Stops accepting and closes every connection with 1001; a "stopped" event follows.
    fn stop(&self) {
        let server = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        let events = self.events.clone();
        runtime().spawn(async move {
            if let Some(server) = server {
                if tokio::time::timeout(SHUTDOWN_GRACE, server.shutdown())
                    .await
                    .is_err()
                {
                    tracing::warn!("some connections did not close in time");
                }
            }
            events.push("stopped", "");
        });
    }
}
