//! `PipeServer`: the pipe wire's server side, serving the rooms of a `RoomRegistry` over
//! socketpairs and OS pipes. Frames are read and written on tokio; Python only hands over
//! descriptors.

use std::os::fd::{IntoRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use wiredb_core::pipe::{self, PipeConfig, PipeServer as CoreServer};
use wiredb_core::runtime::runtime;

use crate::errors;
use crate::registry::{Events, RoomRegistry};

/// How long `stop()` lets members flush their queues before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[pyclass(frozen, module = "wiredb._wiredb")]
pub struct PipeServer {
    server: Arc<CoreServer>,
    events: Arc<Events>,
}

fn adopt(fd: i32) -> PyResult<OwnedFd> {
    // SAFETY: Python hands the descriptor over with the call (documented in `_wiredb.pyi`):
    // nothing else closes it afterwards.
    unsafe { pipe::adopt_fd(fd) }.map_err(errors::io_error)
}

#[pymethods]
impl PipeServer {
    #[new]
    #[pyo3(signature = (rooms, max_message_bytes = 64 << 20))]
    fn new(rooms: &RoomRegistry, max_message_bytes: usize) -> Self {
        let config = PipeConfig {
            max_message_bytes,
            ..PipeConfig::default()
        };
        PipeServer {
            server: Arc::new(CoreServer::new(rooms.registry.clone(), config)),
            events: rooms.events.clone(),
        }
    }

    /// A new peer of room `id`: serves one end of a socketpair and returns the other end (a
    /// close-on-exec descriptor that the caller owns).
    fn connect(&self, id: String) -> PyResult<i32> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(errors::io_error)?;
        let _entered = runtime().enter();
        let (reader, writer) = pipe::socket_halves(ours.into()).map_err(errors::io_error)?;
        self.server.attach(id, reader, writer);
        Ok(theirs.into_raw_fd())
    }

    /// Serves a peer of room `id` over descriptors it takes ownership of (closed when the peer
    /// ends, even on error): one socket when `sender == receiver`, else the sending and
    /// receiving ends (pipes or sockets).
    fn attach(&self, id: String, sender: i32, receiver: i32) -> PyResult<()> {
        let _entered = runtime().enter();
        let halves = if sender == receiver {
            pipe::socket_halves(adopt(sender)?)
        } else {
            let sender = adopt(sender)?;
            pipe::fd_halves(adopt(receiver)?, sender)
        };
        let (reader, writer) = halves.map_err(errors::io_error)?;
        self.server.attach(id, reader, writer);
        Ok(())
    }

    /// Ends every peer after what was queued for it; a "stopped" event of the registry follows.
    fn stop(&self) {
        let server = self.server.clone();
        let events = self.events.clone();
        runtime().spawn(async move {
            if tokio::time::timeout(SHUTDOWN_GRACE, server.shutdown())
                .await
                .is_err()
            {
                tracing::warn!("some pipe peers did not close in time");
            }
            events.push("stopped", "");
        });
    }
}
