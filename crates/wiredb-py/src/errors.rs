//! The one place where core errors become Python exceptions.

use pyo3::exceptions::{PyConnectionError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::PyErr;
use wiredb_core::guard::GuardError;
use wiredb_core::persist::PersistError;
use wiredb_core::registry::RegistryError;
use wiredb_core::room::RoomError;
use wiredb_core::store::StoreError;

pub fn guard_error(error: GuardError) -> PyErr {
    PyValueError::new_err(error.to_string())
}

pub fn room_error(error: RoomError) -> PyErr {
    PyValueError::new_err(error.to_string())
}

pub fn bind_error(addr: &str, error: std::io::Error) -> PyErr {
    PyOSError::new_err((
        error.raw_os_error().unwrap_or(0),
        format!("cannot listen on {addr}: {error}"),
    ))
}

pub fn io_error(error: std::io::Error) -> PyErr {
    PyOSError::new_err((error.raw_os_error().unwrap_or(0), error.to_string()))
}

/// A store's error: a file of another version is a `RuntimeError` (as in wire-file), an I/O
/// error an `OSError` of the matching subclass (`FileNotFoundError`...) naming the file, a room
/// id that cannot name a file a `ValueError`.
pub fn persist_error(error: &PersistError) -> PyErr {
    match error {
        PersistError::Store(StoreError::VersionMismatch { .. }) => {
            PyRuntimeError::new_err(error.to_string())
        }
        PersistError::Store(StoreError::Io { path, source })
        | PersistError::CreateDir { path, source } => PyOSError::new_err((
            source.raw_os_error().unwrap_or(0),
            error.to_string(),
            path.to_string_lossy().into_owned(),
        )),
        PersistError::IdTooLong { .. } => PyValueError::new_err(error.to_string()),
        PersistError::Store(StoreError::NameTooLong { path, .. }) => PyOSError::new_err((
            error_errno(error),
            error.to_string(),
            path.to_string_lossy().into_owned(),
        )),
        PersistError::Store(_) | PersistError::Crashed { .. } => {
            PyRuntimeError::new_err(error.to_string())
        }
    }
}

fn error_errno(error: &PersistError) -> i32 {
    match error {
        PersistError::Store(error) => error.errno().unwrap_or(0),
        _ => 0,
    }
}

/// A room that could not be opened for an in-process peer, as a refused connection would be.
pub fn registry_error(error: &RegistryError) -> PyErr {
    PyConnectionError::new_err(error.to_string())
}
