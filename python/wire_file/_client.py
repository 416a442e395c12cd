"""File clients: a `pycrdt.Doc` kept in sync with an update file (wire-file 0.7.1's format).

Each client keeps a private native room holding the file's content with a native store attached
(`wiredb._wiredb.FileStore`): the document joins that room like any other client, so the sync
(both ways on open, then every change) is the same code as for the other wires, and the file
I/O runs on tokio's blocking pool, never on the event loop.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any

from pycrdt import Doc

from wiredb import AsyncClient, AsyncClientMixin, Client, ClientMixin
from wiredb._wiredb import Endpoint, FileStore, RoomCore

from ._store import (
    Fsync,
    check_fsync,
    close_store,
    close_store_blocking,
    flush_blocking,
    flush_store,
    open_store,
    open_store_blocking,
)

#: An empty document's state vector.
EMPTY_STATE_VECTOR = b"\x00"


class _FileLink:
    """The private room and store of one file client."""

    def __init__(
        self,
        id: str,
        path: str | os.PathLike[str],
        write_delay: float,
        squash: bool,
        fsync: Fsync,
    ):
        if write_delay < 0:
            raise ValueError(f"write_delay must be >= 0, not {write_delay}")
        check_fsync(fsync)
        self.id = id
        self.path = Path(path)
        self.write_delay = float(write_delay)
        self.squash = squash
        self.fsync: Fsync = fsync
        self.room: RoomCore | None = None
        self.store: FileStore | None = None

    def connect(self) -> Endpoint:
        if self.room is None:
            raise RuntimeError("the file client is not open")
        return self.room.peer()


class AsyncFileClient(AsyncClientMixin):
    """A document kept in sync with an update file, on asyncio or trio.

    ```py
    async with AsyncFileClient(path="notes.y") as client:
        text = client.doc.get("text", Text)
        text += "Hello"       # appended to notes.y
        await client.flush()  # fsynced: survives a power loss
    ```
    On entry the file and the document are synchronized both ways: what the document has that
    the file lacks is appended, what the file has is applied to the document (with `auto_pull`;
    else on `pull()`). Then every change of the document is appended as it happens (with
    `auto_push`; else on `push()`). `flush()` returns once every change made before it is
    durable under the `fsync` policy; on exit too (a failed write or fsync raises `OSError`).

    Differences with wire-file 0.7.1, all of them fixes: a change made within `write_delay` of
    leaving is written (not lost); `write_delay` batches changes for at most that long after the
    first one (a steady stream of changes is still written); each record carries a checksum
    (inside its buffer, where the original ignores it), so a torn or garbage tail is found
    exactly and cut off with a warning instead of making the file unreadable; a squash replaces
    the file atomically; clients of the same file never interleave half records; a failed write
    or fsync is never acknowledged (`flush()` raises, the client keeps the changes and retries).
    """

    def __init__(
        self,
        id: str = "",
        doc: Doc[Any] | None = None,
        auto_push: bool = True,
        auto_pull: bool = True,
        *,
        path: Path | str,
        write_delay: float = 0,
        squash: bool = False,
        fsync: Fsync = "flush",
    ) -> None:
        """
        Args:
            id: The client ID (unused by the file; kept for the wires' common signature).
            doc: The document to sync (a new one if None).
            auto_push: Write local changes as they are made; else on `push()`.
            auto_pull: Apply the file's content on entry; else on `pull()`.
            path: The update file; created if missing (its directory must exist).
            write_delay: Seconds a change may wait for later ones, to write them all at once.
            squash: Compact the file into one update on entry, and keep it so on every write.
            fsync: When to fsync: "flush" (on `flush()` and exit), "always" (after every
                write), or "none" (never: a change survives the process, not a power loss).
        """
        self._link = _FileLink(id, path, write_delay, squash, fsync)
        self._client = AsyncClient(self._link.connect, doc, auto_push, auto_pull)

    @property
    def version(self) -> str:
        """The file format version ("0.0.1")."""
        return FileStore.version

    @property
    def path(self) -> Path:
        return self._link.path

    @property
    def fsync(self) -> Fsync:
        """The fsync policy ("none", "flush" or "always")."""
        return self._link.fsync

    async def flush(self) -> None:
        """Returns once every change made so far is durable under the fsync policy: fsynced,
        unless the policy is "none" (then written). Pushes first, with `auto_push=False`.

        Raises:
            OSError: a write or fsync failed (ENOSPC, EIO...): those changes are not
                acknowledged; the client keeps them and retries (a later `flush()` may pass).
        """
        store = self._link.store
        if store is None:
            raise RuntimeError("the client is not open: use it in an `async with` block")
        self._client.push()
        await flush_store(store, durable=True)

    async def __aenter__(self) -> AsyncFileClient:
        link = self._link
        room = RoomCore(link.id)
        store = await open_store(room, link.path, link.write_delay, link.squash, fsync=link.fsync)
        link.room, link.store = room, store
        brings = self._client.doc.get_state() != EMPTY_STATE_VECTOR
        try:
            await self._client.__aenter__()
        except BaseException:
            await self._close()
            raise
        if brings:
            # What the document brought to the sync is written now, not after `write_delay`.
            store.flush()
        return self

    async def _close(self) -> None:
        link = self._link
        store, link.store, link.room = link.store, None, None
        if store is not None:
            state = await close_store(store)
            del store  # closes its eventfd now, even if a traceback keeps this frame
            state.check()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        try:
            await self._client.__aexit__(exc_type, exc_val, exc_tb)
        finally:
            await self._close()


class FileClient(ClientMixin):
    """A document kept in sync with an update file, without an event loop.

    ```py
    with FileClient(path="notes.y") as client:
        client.pull()   # the file's content is in the document, the document's in the file
        client.doc.get("text", Text).insert(0, "Hello")
        client.push()   # written when push() returns
    ```
    `pull()` and `push()` return once what they sent is written (fsynced too, with
    `fsync="always"`); `flush()` once it is durable under the `fsync` policy. With
    `auto_push=True` changes are written in the background as they are made; on exit every
    change made before is on disk (fsynced unless `fsync="none"`).
    """

    def __init__(
        self,
        id: str = "",
        doc: Doc[Any] | None = None,
        auto_push: bool = False,
        *,
        path: Path | str,
        write_delay: float = 0,
        squash: bool = False,
        fsync: Fsync = "flush",
    ) -> None:
        """
        Args:
            id: The client ID (unused by the file; kept for the wires' common signature).
            doc: The document to sync (a new one if None).
            auto_push: Write local changes as they are made; else on `push()`.
            path: The update file; created if missing (its directory must exist).
            write_delay: Seconds a change may wait for later ones (with `auto_push`).
            squash: Compact the file into one update on entry, and keep it so on every write.
            fsync: When to fsync: "flush" (on `flush()` and exit), "always" (after every
                write), or "none" (never: a change survives the process, not a power loss).
        """
        self._link = _FileLink(id, path, write_delay, squash, fsync)
        self._client = Client(self._link.connect, doc, auto_push)

    @property
    def version(self) -> str:
        """The file format version ("0.0.1")."""
        return FileStore.version

    @property
    def path(self) -> Path:
        return self._link.path

    def _store(self) -> FileStore:
        if self._link.store is None:
            raise RuntimeError("the client is not open: use it in a `with` block")
        return self._link.store

    def pull(self) -> None:
        """Synchronizes with the file (the first time) and returns once the document's part
        of that sync is written."""
        store = self._store()
        self._client.pull()
        flush_blocking(store)

    def push(self) -> None:
        """Writes the local changes made since the last push; returns once they are written."""
        store = self._store()
        self._client.push()
        flush_blocking(store)

    @property
    def fsync(self) -> Fsync:
        """The fsync policy ("none", "flush" or "always")."""
        return self._link.fsync

    def flush(self) -> None:
        """Pushes, then returns once every change is durable under the fsync policy: fsynced,
        unless the policy is "none" (then written).

        Raises:
            OSError: a write or fsync failed (ENOSPC, EIO...): those changes are not
                acknowledged; the client keeps them and retries (a later `flush()` may pass).
        """
        store = self._store()
        self._client.push()
        flush_blocking(store, durable=True)

    def __enter__(self) -> FileClient:
        link = self._link
        room = RoomCore(link.id)
        store = open_store_blocking(room, link.path, link.write_delay, link.squash, link.fsync)
        link.room, link.store = room, store
        try:
            self._client.__enter__()
        except BaseException:
            self._close()
            raise
        return self

    def _close(self) -> None:
        link = self._link
        store, link.store, link.room = link.store, None, None
        if store is not None:
            state = close_store_blocking(store)
            del store  # closes its eventfd now, even if a traceback keeps this frame
            state.check()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        try:
            self._client.__exit__(exc_type, exc_val, exc_tb)
        finally:
            self._close()
