//! `RoomCore`: a Python handle on a native room (its yrs document, awareness and members).
//!
//! The handle lets go of the room (`release()`) when its server closes it: a closed Python room
//! caught in a reference cycle then holds no document until the cyclic collector runs.

use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use wiredb_core::room::{JoinKind, RoomCore as CoreRoom, RoomLimits};

use crate::endpoint::Endpoint;

#[pyclass(frozen, name = "RoomCore", module = "wiredb._wiredb")]
pub struct RoomCore {
    id: String,
    core: Mutex<Option<Arc<CoreRoom>>>,
}

impl RoomCore {
    /// The native room; RuntimeError once released.
    pub fn core(&self) -> PyResult<Arc<CoreRoom>> {
        self.core
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| PyRuntimeError::new_err(format!("room {:?} is closed", self.id)))
    }
}

#[pymethods]
impl RoomCore {
    #[new]
    fn new(id: String) -> Self {
        RoomCore {
            core: Mutex::new(Some(CoreRoom::new(id.clone(), RoomLimits::default()))),
            id,
        }
    }

    #[getter]
    fn id(&self) -> &str {
        &self.id
    }

    /// Remote peers connected now (0 once released).
    #[getter]
    fn peer_count(&self, py: Python<'_>) -> usize {
        match self.core() {
            Ok(core) => py.detach(|| core.peer_count()),
            Err(_) => 0,
        }
    }

    /// An in-process mirror of the document: it first receives the whole document.
    fn mirror(&self) -> PyResult<Endpoint> {
        Endpoint::member(self.core()?, JoinKind::Mirror)
    }

    /// An in-process peer (a Python channel served by the room).
    fn peer(&self) -> PyResult<Endpoint> {
        Endpoint::member(self.core()?, JoinKind::Peer)
    }

    /// The whole document as one v1 update.
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let core = self.core()?;
        let update = py.detach(|| core.encode_state_as_update());
        Ok(PyBytes::new(py, &update))
    }

    /// Lets go of the native room (its document is freed with the last native holder); the
    /// methods above then raise RuntimeError. For a room its server has closed.
    fn release(&self, py: Python<'_>) {
        let core = self.core.lock().unwrap_or_else(|e| e.into_inner()).take();
        // A large document is freed here: not under the GIL.
        py.detach(|| drop(core));
    }
}
