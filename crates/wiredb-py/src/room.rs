//! `RoomCore`: a Python handle on a native room (its yrs document, awareness and members).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use wiredb_core::room::{JoinKind, RoomCore as CoreRoom, RoomLimits};

use crate::endpoint::Endpoint;

#[pyclass(frozen, name = "RoomCore", module = "wiredb._wiredb")]
pub struct RoomCore {
    pub core: Arc<CoreRoom>,
}

#[pymethods]
impl RoomCore {
    #[new]
    fn new(id: String) -> Self {
        RoomCore {
            core: CoreRoom::new(id, RoomLimits::default()),
        }
    }

    #[getter]
    fn id(&self) -> &str {
        self.core.id()
    }

    /// Remote peers connected now.
    #[getter]
    fn peer_count(&self, py: Python<'_>) -> usize {
        py.detach(|| self.core.peer_count())
    }

    /// An in-process mirror of the document: it first receives the whole document.
    fn mirror(&self) -> PyResult<Endpoint> {
        Endpoint::member(self.core.clone(), JoinKind::Mirror)
    }

    /// An in-process peer (a Python channel served by the room).
    fn peer(&self) -> PyResult<Endpoint> {
        Endpoint::member(self.core.clone(), JoinKind::Peer)
    }

    /// The whole document as one v1 update.
    fn state<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let update = py.detach(|| self.core.encode_state_as_update());
        PyBytes::new(py, &update)
    }
}
