//! Minting and checking signed access tokens (the core's `token` module) from Python.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use wiredb_core::token::{unix_now, Claims, TokenKey};

fn key(secret: &[u8]) -> PyResult<TokenKey> {
    TokenKey::new(secret).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// A token for `room`, valid until `expires_at` (Unix seconds).
#[pyfunction]
#[pyo3(signature = (secret, room, read_only, expires_at, subject = None))]
pub fn mint_token(
    secret: &[u8],
    room: String,
    read_only: bool,
    expires_at: u64,
    subject: Option<String>,
) -> PyResult<String> {
    Ok(key(secret)?.mint(&Claims {
        room,
        read_only,
        expires_at,
        subject,
    }))
}

/// The (read_only, expires_at, subject) a token grants for `room` now; ValueError saying why
/// if it is refused.
#[pyfunction]
pub fn verify_token(
    secret: &[u8],
    token: &str,
    room: &str,
) -> PyResult<(bool, u64, Option<String>)> {
    let claims = key(secret)?
        .verify(token, room, unix_now())
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((claims.read_only, claims.expires_at, claims.subject))
}
