"""wire-file 0.7.1's module path `wire_file.client`.

`FileClient` and `AsyncFileClient` are this package's (file I/O in Rust). The original's file
helpers are kept with their signatures and behaviour, for code that reads or writes update
files itself: a file is its version, a NUL byte, then one lib0 var-length buffer per update
(ours carry a checksum after the update inside the buffer, which readers of updates ignore).
`File` and `AsyncFile`, the original's internal channels, have no counterpart here.
"""

from __future__ import annotations

from io import FileIO
from pathlib import Path
from typing import Any

import anyio
from anyio import Lock
from pycrdt import Decoder, Doc, write_message

from wiredb import AsyncChannel, Channel
from wiredb._channel import NotProvided

from ._client import AsyncFileClient as AsyncFileClient
from ._client import FileClient as FileClient


def read_file(path: Path) -> tuple[str, bytes]:
    """The version of the update file at `path` and its records (still var-length encoded)."""
    return _split(path.read_bytes())


async def aread_file(path: anyio.Path, lock: Lock) -> tuple[str, bytes]:
    """`read_file`, off the event loop, under `lock`."""
    async with lock:
        return _split(await path.read_bytes())


def write_file(file: FileIO, data: bytes) -> None:
    """Appends `data` (encoded records, or the header) to an open update file."""
    file.write(data)


async def awrite_file(file: anyio.AsyncFile[bytes], data: bytes, lock: Lock) -> None:
    """`write_file` for an anyio file, under `lock`."""
    async with lock:
        await file.write(data)


def squash_file(file: FileIO, with_messages: bytes | None = None) -> None:
    """Rewrites an open update file (opened for reading and appending) as one update holding
    the state of a document that applied all its records (and `with_messages`, more encoded
    records). In place, as 0.7.1 did; the clients here squash atomically instead
    (`squash=True`)."""
    file.seek(0)
    header, records = _split_raw(file.read())
    file.truncate(len(header) + 1)
    file.write(write_message(_squashed(records + (with_messages or b""))))


async def asquash_file(
    file: anyio.AsyncFile[bytes], lock: Lock, with_messages: bytes | None = None
) -> None:
    """`squash_file` for an anyio file, under `lock`."""
    async with lock:
        await file.seek(0)
        header, records = _split_raw(await file.read())
        await file.truncate(len(header) + 1)
        await file.write(write_message(_squashed(records + (with_messages or b""))))


def _split_raw(data: bytes) -> tuple[bytes, bytes]:
    header, _, records = data.partition(b"\x00")
    return header, records


def _split(data: bytes) -> tuple[str, bytes]:
    header, records = _split_raw(data)
    return header.decode(), records


def _squashed(records: bytes) -> bytes:
    doc: Doc[Any] = Doc()
    decoder = Decoder(records)
    while update := decoder.read_message():
        doc.apply_update(update)
    return doc.get_update()


class File(NotProvided, Channel):
    """Use `FileClient(path=...)`: wire-file 0.7.1's internal blocking channel is not here."""


class AsyncFile(NotProvided, AsyncChannel):
    """Use `AsyncFileClient(path=...)`: wire-file 0.7.1's internal async channel is not here."""


__all__ = [
    "AsyncFile",
    "AsyncFileClient",
    "File",
    "FileClient",
    "aread_file",
    "asquash_file",
    "awrite_file",
    "read_file",
    "squash_file",
    "write_file",
]
