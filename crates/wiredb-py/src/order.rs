//! Whether a document can take an update now: what a client checks before it hands a received
//! update to its `pycrdt.Doc` (see `guard::fits`).

use bytes::Bytes;
use pyo3::prelude::*;
use wiredb_core::guard::{self, GuardLimits};

use crate::errors;

/// Whether `update` (v1) integrates into a document at `state_vector` without a gap in any
/// client's clocks. Raises `ValueError` for bytes the guard refuses.
#[pyfunction]
pub fn update_fits(update: &[u8], state_vector: &[u8]) -> PyResult<bool> {
    let checked =
        guard::check_update(update, &GuardLimits::default()).map_err(errors::guard_error)?;
    let sv = guard::decode_state_vector(&Bytes::copy_from_slice(state_vector))
        .map_err(errors::guard_error)?;
    Ok(guard::fits(&checked.report, &sv))
}
