//! `wiredb._wiredb`: the Python bindings of wiredb-core. Thin wrappers only; the GIL is
//! released around anything that locks a room, merges updates or waits.

use pyo3::prelude::*;

mod endpoint;
mod errors;
mod frames;
mod logging;
mod memory;
mod order;
mod pipe;
mod registry;
mod room;
mod server;
mod store;
mod token;

#[pymodule]
fn _wiredb(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::init();
    m.add_class::<endpoint::Endpoint>()?;
    m.add_class::<endpoint::Batch>()?;
    m.add_class::<room::RoomCore>()?;
    m.add_class::<server::WebSocketServer>()?;
    m.add_class::<registry::RoomRegistry>()?;
    m.add_class::<registry::PendingJoin>()?;
    m.add_class::<pipe::PipeServer>()?;
    m.add_function(wrap_pyfunction!(frames::frame_step1, m)?)?;
    m.add_function(wrap_pyfunction!(frames::frame_step2, m)?)?;
    m.add_function(wrap_pyfunction!(frames::frame_update, m)?)?;
    m.add_function(wrap_pyfunction!(frames::frame_awareness, m)?)?;
    m.add_function(wrap_pyfunction!(frames::frame_token, m)?)?;
    m.add_function(wrap_pyfunction!(frames::absorb, m)?)?;
    m.add_function(wrap_pyfunction!(order::update_fits, m)?)?;
    m.add_function(wrap_pyfunction!(memory::set_memory_limit, m)?)?;
    m.add_function(wrap_pyfunction!(memory::memory_usage, m)?)?;
    m.add_function(wrap_pyfunction!(token::mint_token, m)?)?;
    m.add_function(wrap_pyfunction!(token::verify_token, m)?)?;
    m.add("MIN_SECRET_BYTES", wiredb_core::token::MIN_SECRET_BYTES)?;
    m.add_class::<store::FileStore>()?;
    m.add_class::<store::StoreState>()?;
    m.add_function(wrap_pyfunction!(store::room_file_name, m)?)?;
    m.add_function(wrap_pyfunction!(store::room_id_from_file_name, m)?)?;
    Ok(())
}
