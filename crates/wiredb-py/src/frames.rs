//! Module functions for Python channels (transports written in Python): encode the frames a
//! document sends and turn received frames into one `Batch`, with the same codec and guard as
//! the native wires.

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use wiredb_core::guard::GuardLimits;
use wiredb_core::protocol::{Message, AUTH_TOKEN};
use wiredb_core::queue::CloseReason;
use wiredb_core::sync;

use crate::endpoint::Batch;

fn encode<'py>(py: Python<'py>, message: Message) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &message.encode())
}

#[pyfunction]
pub fn frame_step1<'py>(py: Python<'py>, state_vector: &[u8]) -> Bound<'py, PyBytes> {
    encode(py, Message::SyncStep1(Bytes::copy_from_slice(state_vector)))
}

#[pyfunction]
pub fn frame_step2<'py>(py: Python<'py>, update: &[u8]) -> Bound<'py, PyBytes> {
    encode(py, Message::SyncStep2(Bytes::copy_from_slice(update)))
}

#[pyfunction]
pub fn frame_update<'py>(py: Python<'py>, update: &[u8]) -> Bound<'py, PyBytes> {
    encode(py, Message::Update(Bytes::copy_from_slice(update)))
}

#[pyfunction]
pub fn frame_awareness<'py>(py: Python<'py>, payload: &[u8]) -> Bound<'py, PyBytes> {
    encode(py, Message::Awareness(Bytes::copy_from_slice(payload)))
}

/// A y-protocols auth message carrying an access token (wiredb's token sub-type): sent as a
/// connection's first frame, it authorizes the connection.
#[pyfunction]
pub fn frame_token<'py>(py: Python<'py>, token: &str) -> Bound<'py, PyBytes> {
    encode(
        py,
        Message::Auth {
            kind: AUTH_TOKEN,
            reason: Bytes::copy_from_slice(token.as_bytes()),
        },
    )
}

/// Decodes received frames into one batch, pending updates merged into one; `closed` is
/// reported as the batch's end of stream.
#[pyfunction]
#[pyo3(signature = (frames, closed = None))]
pub fn absorb(py: Python<'_>, frames: Vec<Vec<u8>>, closed: Option<(u16, String)>) -> Batch {
    let frames: Vec<Bytes> = frames.into_iter().map(Bytes::from).collect();
    let batch = py.detach(|| sync::absorb(&frames, &GuardLimits::default()));
    Batch::new(
        batch,
        closed.map(|(code, reason)| CloseReason::new(code, reason)),
    )
}
