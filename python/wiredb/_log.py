"""Log lines of bounded size: what a client sent (room ids, reasons, headers) is clipped before
it is logged, and a traceback is bounded too. Never log client-provided text without these."""

from __future__ import annotations

import re
import traceback

#: Characters of one client-provided value kept in a log line.
MAX_LOGGED_CHARS = 200
#: Lines of a traceback kept in a log record (the first and the last ones).
MAX_TRACEBACK_LINES = 40


# Control characters (a line break in a room id would start a forged log line).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]


def clip(text: str, limit: int = MAX_LOGGED_CHARS) -> str:
    """`text` cut to `limit` characters, with an ellipsis and its full length if it was cut,
    and its control characters escaped."""
    kept = text if len(text) <= limit else text[:limit]
    kept = _CONTROL.sub(_escape, kept)
    return kept if len(text) <= limit else f"{kept}… ({len(text)} chars)"


def clipped(value: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """`repr(value)` (quoted, control characters escaped: no forged log lines), clipped."""
    if isinstance(value, str) and len(value) > limit:
        # Not repr'd whole first: an id may be megabytes.
        return f"{value[:limit]!r}… ({len(value)} chars)"
    return clip(repr(value), limit)


def bounded_traceback(error: BaseException) -> str:
    """`error`'s traceback, each line clipped and at most `MAX_TRACEBACK_LINES` lines (an
    exception message may quote what a client sent). A group of one is shown as its one."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    lines = "".join(traceback.format_exception(error)).splitlines()
    if len(lines) > MAX_TRACEBACK_LINES:
        half = MAX_TRACEBACK_LINES // 2
        lines = [*lines[:half], f"... ({len(lines) - 2 * half} lines left out)", *lines[-half:]]
    return "\n".join(clip(line, 2 * MAX_LOGGED_CHARS) for line in lines)


def describe(error: BaseException) -> str:
    """`error` as one short line: its type and its clipped message."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return clip(f"{type(error).__name__}: {error}")
