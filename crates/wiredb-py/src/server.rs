//! `WebSocketServer`: the native server, serving the rooms of a `RoomRegistry` (whose events
//! let Python run the user's room factory and the room's tasks).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use wiredb_core::registry::Registry;
use wiredb_core::runtime::runtime;
use wiredb_core::server::{Server, ServerConfig};

use crate::errors;
use crate::registry::{Events, RoomRegistry};

/// How long `stop()` lets connections flush their queues before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
        rooms,
        max_message_bytes = 64 << 20,
        max_connections = 10_000,
        ping_interval = 30.0,
        idle_timeout = 90.0,
    ))]
    fn new(
        rooms: &RoomRegistry,
        max_message_bytes: usize,
        max_connections: usize,
        ping_interval: f64,
        idle_timeout: f64,
    ) -> PyResult<Self> {
        let config = ServerConfig {
            max_message_bytes,
            max_connections: max_connections.max(1),
            ping_interval: seconds("ping_interval", ping_interval)?,
            idle_timeout: seconds("idle_timeout", idle_timeout)?,
            room: rooms.registry.limits(),
            ..ServerConfig::default()
        };
        Ok(WebSocketServer {
            registry: rooms.registry.clone(),
            events: rooms.events.clone(),
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
