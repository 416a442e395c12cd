//! `WebSocketServer`: the native server, serving the rooms of a `RoomRegistry` (whose events
//! let Python run the user's room factory and the room's tasks).
//!
//! Who may connect is decided natively (origin, tokens) or by Python: requests for the hook are
//! queued and an eventfd made readable (`auth_fd`, `auth_events()`), Python answers with
//! `decide()`. A request that stops waiting undecided (its connection closed at a cap, gone,
//! timed out, or the server stopping) is reported withdrawn on the same queue, so that Python
//! cancels its hook. Python may also list a room's connections, close them or make them read-only.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use wiredb_core::auth::{AuthConfig, Authorizer, Decision, Request};
use wiredb_core::connections::Connections;
use wiredb_core::queue::CloseReason;
use wiredb_core::registry::Registry;
use wiredb_core::room::Access;
use wiredb_core::runtime::runtime;
use wiredb_core::server::{Server, ServerConfig};
use wiredb_core::token::TokenKey;
use wiredb_core::wake::EventFd;

use crate::errors;
use crate::registry::{Events, RoomRegistry};

/// A request as Python gets it: (id, path, room, query, headers, peer host, peer port).
type PyRequest = (
    u64,
    String,
    String,
    String,
    Vec<(String, String)>,
    String,
    u16,
);

fn py_request(request: &Request) -> PyRequest {
    (
        request.id,
        request.path.clone(),
        request.room.clone(),
        request.query.clone(),
        request.headers.clone(),
        request.peer.ip().to_string(),
        request.peer.port(),
    )
}

/// Requests waiting for the Python hook, and the ids of those withdrawn since Python last
/// looked.
struct AuthQueue {
    queue: Mutex<AuthEvents>,
    fd: EventFd,
}

#[derive(Default)]
struct AuthEvents {
    requests: VecDeque<Arc<Request>>,
    withdrawn: Vec<u64>,
}

impl AuthQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, AuthEvents> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Authorizer for AuthQueue {
    fn authorize(&self, request: Arc<Request>) {
        self.lock().requests.push_back(request);
        self.fd.notify();
    }

    fn withdraw(&self, id: u64) {
        self.lock().withdrawn.push(id);
        self.fd.notify();
    }
}

/// How long `stop()` lets connections flush their queues before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[pyclass(frozen, module = "wiredb._wiredb")]
pub struct WebSocketServer {
    registry: Arc<Registry>,
    events: Arc<Events>,
    config: ServerConfig,
    server: Mutex<Option<Server>>,
    connections: Arc<Connections>,
    hook: Option<Arc<AuthQueue>>,
}

fn access(read_only: bool) -> Access {
    if read_only {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    }
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
        rooms,
        max_message_bytes = 64 << 20,
        max_connections = 10_000,
        ping_interval = 30.0,
        idle_timeout = 90.0,
        write_timeout = 30.0,
        authorize = false,
        token_secret = None,
        allowed_origins = None,
        auth_timeout = 10.0,
        max_pending_messages = 64,
        max_pending_bytes = 1 << 20,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        rooms: &RoomRegistry,
        max_message_bytes: usize,
        max_connections: usize,
        ping_interval: f64,
        idle_timeout: f64,
        write_timeout: f64,
        authorize: bool,
        token_secret: Option<Vec<u8>>,
        allowed_origins: Option<Vec<String>>,
        auth_timeout: f64,
        max_pending_messages: usize,
        max_pending_bytes: usize,
    ) -> PyResult<Self> {
        let hook = if authorize {
            Some(Arc::new(AuthQueue {
                queue: Mutex::new(AuthEvents::default()),
                fd: EventFd::new().map_err(errors::io_error)?,
            }))
        } else {
            None
        };
        let token = token_secret
            .map(|secret| TokenKey::new(&secret))
            .transpose()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let auth = AuthConfig {
            allowed_origins,
            token,
            hook: hook.clone().map(|h| h as Arc<dyn Authorizer>),
            timeout: seconds("auth_timeout", auth_timeout)?,
            max_pending_frames: max_pending_messages,
            max_pending_bytes,
        };
        let config = ServerConfig {
            max_message_bytes,
            max_connections: max_connections.max(1),
            ping_interval: seconds("ping_interval", ping_interval)?,
            idle_timeout: seconds("idle_timeout", idle_timeout)?,
            write_timeout: seconds("write_timeout", write_timeout)?,
            room: rooms.registry.limits(),
            auth,
            ..ServerConfig::default()
        };
        Ok(WebSocketServer {
            registry: rooms.registry.clone(),
            events: rooms.events.clone(),
            config,
            server: Mutex::new(None),
            connections: Connections::new(),
            hook,
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
        let connections = self.connections.clone();
        let server = py
            .detach(|| runtime().block_on(Server::bind_with(&addr, registry, config, connections)))
            .map_err(|e| errors::bind_error(&addr, e))?;
        let port = server.local_addr().port();
        *self.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(server);
        Ok(port)
    }

    /// Readable when `auth_events()` has something; -1 without a hook.
    #[getter]
    fn auth_fd(&self) -> i32 {
        self.hook.as_ref().map_or(-1, |hook| hook.fd.raw())
    }

    /// What happened since the last call: the connections now waiting for the hook's decision
    /// (oldest first), and the ids of connections that stopped waiting undecided since (the
    /// hook deciding one may be cancelled). A request withdrawn before this call handed it out
    /// is left out of both lists.
    fn auth_events(&self) -> (Vec<PyRequest>, Vec<u64>) {
        let Some(hook) = &self.hook else {
            return (Vec::new(), Vec::new());
        };
        // Cleared first: anything queued from here on makes the fd readable again.
        hook.fd.clear();
        let AuthEvents {
            requests,
            mut withdrawn,
        } = std::mem::take(&mut *hook.lock());
        withdrawn.sort_unstable();
        // A request is queued before its withdrawal, so one withdrawn in this batch is either
        // among these requests (never shown to Python) or was handed out earlier.
        let fresh: Vec<_> = requests
            .iter()
            .filter(|r| withdrawn.binary_search(&r.id).is_err())
            .filter(|r| self.connections.is_waiting(r.id))
            .map(|r| py_request(r))
            .collect();
        let handed_out = withdrawn
            .into_iter()
            .filter(|id| !requests.iter().any(|r| r.id == *id))
            .collect();
        (fresh, handed_out)
    }

    /// The hook's decision about connection `id`: let in (read-only or not, with an identity)
    /// or closed with `code` and `reason`. False if it is not waiting any more.
    #[pyo3(signature = (id, allow, read_only, identity, code, reason))]
    fn decide(
        &self,
        id: u64,
        allow: bool,
        read_only: bool,
        identity: Option<String>,
        code: u16,
        reason: String,
    ) -> bool {
        let decision = if allow {
            Decision::Allow {
                access: access(read_only),
                identity,
            }
        } else {
            Decision::Deny(CloseReason::new(code, reason))
        };
        self.connections.decide(id, decision)
    }

    /// The connections of room `id` that were let in: (request, identity, read-only, joined).
    fn connections(
        &self,
        py: Python<'_>,
        room: &str,
    ) -> Vec<(PyRequest, Option<String>, bool, bool)> {
        py.detach(|| self.connections.in_room(room))
            .into_iter()
            .map(|c| {
                (
                    py_request(&c.request),
                    c.identity,
                    c.access == Access::ReadOnly,
                    c.joined,
                )
            })
            .collect()
    }

    /// Closes connections of `room` (`ids`, or all) with `code` and `reason`; once this
    /// returns nothing they send is applied. Returns how many it closed.
    #[pyo3(signature = (room, ids, code, reason))]
    fn close_connections(
        &self,
        py: Python<'_>,
        room: &str,
        ids: Option<Vec<u64>>,
        code: u16,
        reason: String,
    ) -> usize {
        let reason = CloseReason::new(code, reason);
        py.detach(|| self.connections.close(room, ids.as_deref(), &reason))
    }

    /// Makes connections of `room` (`ids`, or all) read-only or read-write; once this returns
    /// no update of one made read-only is applied. Returns how many it changed.
    #[pyo3(signature = (room, ids, read_only))]
    fn set_read_only(
        &self,
        py: Python<'_>,
        room: &str,
        ids: Option<Vec<u64>>,
        read_only: bool,
    ) -> usize {
        py.detach(|| {
            self.connections
                .set_access(room, ids.as_deref(), access(read_only))
        })
    }

    /// Stops accepting and closes every connection with 1001; a "stopped" event of the
    /// registry follows.
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
