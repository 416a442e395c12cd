//! The one place where core errors become Python exceptions.

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::PyErr;
use wiredb_core::room::RoomError;

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
