//! Native log lines: to stderr, at the level named by `WIREDB_LOG` (default: warn), so that
//! logging never calls into Python from a tokio thread. Every field is clipped: room ids,
//! reasons and errors carry what a client sent, and a log line must stay small whatever it is.

use tracing_subscriber::field::MakeExt;
use wiredb_core::clip::write_clipped;

/// Characters of one field kept in a log line (as the Python side's `MAX_LOGGED_CHARS`).
const MAX_FIELD_CHARS: usize = 200;

pub fn init() {
    let level = std::env::var("WIREDB_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::WARN);
    let fields = tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        if field.name() != "message" {
            write!(writer, "{field}=")?;
        }
        write_clipped(writer, &format!("{value:?}"), MAX_FIELD_CHARS)
    })
    .delimited(" ");
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .fmt_fields(fields)
        .try_init();
}
