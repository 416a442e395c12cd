//! Native log lines: to stderr, at the level named by `WIREDB_LOG` (default: warn), so that
//! logging never calls into Python from a tokio thread. Every field is clipped: room ids,
//! reasons and errors carry what a client sent, and a log line must stay small whatever it is.

use std::fmt::Write as _;

use tracing_subscriber::field::MakeExt;

/// Characters of one field kept in a log line (as the Python side's `MAX_LOGGED_CHARS`).
const MAX_FIELD_CHARS: usize = 200;

pub fn init() {
    let level = std::env::var("WIREDB_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::WARN);
    let fields = tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = clip(&format!("{value:?}"), MAX_FIELD_CHARS);
        if field.name() == "message" {
            write!(writer, "{text}")
        } else {
            write!(writer, "{field}={text}")
        }
    })
    .delimited(" ");
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .fmt_fields(fields)
        .try_init();
}

/// `text` with control characters escaped (no forged log lines), cut to `limit` characters
/// with an ellipsis and its full length when longer. (The crate has no Rust tests: this is
/// checked from Python, `tests/test_log_bounds.py`.)
pub fn clip(text: &str, limit: usize) -> String {
    let mut out = String::with_capacity(text.len().min(limit * 2) + 24);
    for (kept, c) in text.chars().enumerate() {
        if kept == limit {
            let _ = write!(out, "… ({} bytes)", text.len());
            return out;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
