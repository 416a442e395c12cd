//! The process's memory budget (`wiredb_core::budget::Memory`), as Python sees it.

use pyo3::prelude::*;
use wiredb_core::budget::Memory;

/// Sets the process-wide limit of what peers may make wiredb hold, in bytes.
#[pyfunction]
pub fn set_memory_limit(limit: usize) -> PyResult<()> {
    if limit == 0 {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "memory_limit must be positive",
        ));
    }
    Memory::process().set_limit(limit);
    Ok(())
}

/// (bytes held for peers now, the limit).
#[pyfunction]
pub fn memory_usage() -> (usize, usize) {
    let memory = Memory::process();
    (memory.used(), memory.limit())
}
