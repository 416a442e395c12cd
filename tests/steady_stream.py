"""A steady stream of edits, one every few milliseconds, watching a file fill meanwhile: what
`write_delay` must bound (wire-file 0.7.1 restarted its wait on every edit, so a stream with
edits closer together than the delay was not written until it stopped)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anyio import sleep
from pycrdt import Doc, Text

from update_files import complete_records


def written(path: Path) -> tuple[str, int]:
    """The text `text` that the file's complete records hold now, and how many records."""
    doc: Doc[Any] = Doc()
    records = complete_records(path.read_bytes()) if path.exists() else []
    for record in records:
        doc.apply_update(record)
    return str(doc.get("text", type=Text)), len(records)


def part(i: int) -> str:
    return f"<{i}>"


@dataclass
class Stream:
    """What the file held while the stream went on."""

    edits: int
    #: The number of edits made when the file first held edit 0 (None: not during the stream).
    first_on_disk_after: int | None = None
    #: How many of the stream's edits the file held as the stream ended, in how many records.
    on_disk_at_end: int = 0
    records_at_end: int = 0


async def stream(text: Text, path: Path, edits: int = 75, every: float = 0.02) -> Stream:
    """Appends `part(i)` to `text` every `every` seconds, `edits` times, reading the file after
    each edit."""
    seen = Stream(edits)
    for i in range(edits):
        text += part(i)
        await sleep(every)
        on_disk, seen.records_at_end = written(path)
        if seen.first_on_disk_after is None and part(0) in on_disk:
            seen.first_on_disk_after = i + 1
        seen.on_disk_at_end = sum(part(j) in on_disk for j in range(i + 1))
    return seen


def check_bounded(seen: Stream) -> None:
    """What a bounded `write_delay` shows: the file got the stream's first edits while it went
    on, and kept being written (in records of several edits each) until it ended."""
    assert seen.first_on_disk_after is not None, "nothing written while the stream went on"
    assert seen.first_on_disk_after < seen.edits
    assert seen.on_disk_at_end > seen.first_on_disk_after, "written once, then no more"
    assert seen.records_at_end < seen.on_disk_at_end, "edits were not batched"
