"""Rooms persisted to a directory natively: no Python runs per update."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path

from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskStatus

from wiredb import Room
from wiredb._wiredb import FileStore
from wiredb._wiredb import room_file_name as _room_file_name
from wiredb._wiredb import room_id_from_file_name as _room_id_from_file_name

from ._store import Fsync, check_fsync, close_store, flush_store, open_store

log = logging.getLogger("wire_file")


def room_file_name(id: str) -> str:
    """The file name of room `id`'s updates: the id escaped, then `_updates.y`.

    ASCII letters, digits, `-`, `_` and `.` stay as they are (a leading `.` excepted); every
    other byte of the UTF-8 id becomes `%XX`. So a name never holds `/`, `\\` or NUL and never
    starts with `.`: no room id can name a file outside its directory, and plain ids keep the
    name of the documented pattern `f"{id}_updates.y"`.
    ```py
    room_file_name("notes")          # "notes_updates.y"
    room_file_name("../etc/passwd")  # "%2E.%2Fetc%2Fpasswd_updates.y"
    ```

    Raises:
        ValueError: the escaped name would be longer than 255 bytes.
    """
    return _room_file_name(id)


def room_id_from_file_name(name: str) -> str | None:
    """The room id `room_file_name` made `name` from, or None if it made no such name."""
    return _room_id_from_file_name(name)


class FileRoom(Room):
    """A room whose document is persisted to `<directory>/<room_file_name(id)>`, natively.

    The file (wire-file's format) is loaded into the room before its first client syncs, so
    clients get what the last server stored; then a native store, a member of the room drained
    on tokio's threads, appends every update: no Python runs per update. All that is pending
    goes out in one write; `write_delay` lets updates wait that long to share a write. When the
    room closes (its last client left, or the server stopped), what is pending is written and
    fsynced before the room is forgotten. The file is created at the room's first write: a room
    that is never edited leaves no file. An id whose file name (or its filesystem) could not
    store is refused when the room opens (`ValueError`, `OSError` with ENAMETOOLONG).

    ```py
    async with AsyncWebSocketServer(file_room_factory("data"), host="localhost", port=8000):
        ...
    ```
    Durability: an update is written (its `write(2)` returned) as soon as the store's task runs
    after the room applied it (plus `write_delay`); from then on it survives the server being
    killed. It survives a power loss once fsynced: with `fsync="flush"` (the default) when
    `flush()` (or the server's `room_manager.flush()`) returns or the room closes, with
    `fsync="always"` as soon as it is written (every write is fsynced), with `fsync="none"`
    when the kernel writes it back.
    """

    def __init__(
        self,
        id: str,
        *,
        directory: str | os.PathLike[str],
        write_delay: float = 0,
        squash: bool = False,
        fsync: Fsync = "flush",
    ) -> None:
        """
        Args:
            id: The room ID.
            directory: Where room files live; created if missing.
            write_delay: Seconds an update may wait for later ones, to write them all at once.
            squash: Keep each file compacted into a single update (rewritten on every write).
            fsync: When to fsync: "flush" (on `flush()` and close), "always" (after every
                write), or "none" (never).
        """
        if write_delay < 0:
            raise ValueError(f"write_delay must be >= 0, not {write_delay}")
        check_fsync(fsync)
        super().__init__(id)
        self._path = Path(directory) / room_file_name(id)
        self._write_delay = float(write_delay)
        self._squash = squash
        self._fsync: Fsync = fsync
        self._store: FileStore | None = None

    @property
    def path(self) -> Path:
        """The room's file."""
        return self._path

    @property
    def fsync(self) -> Fsync:
        """The fsync policy ("none", "flush" or "always")."""
        return self._fsync

    async def flush(self) -> None:
        """Returns once every update the room applied so far is durable under the fsync
        policy (fsynced, unless it is "none": then written).

        Raises:
            OSError: a write or fsync failed (ENOSPC, EIO...): those updates are not
                acknowledged; the store keeps them and retries, and the room goes on serving.
        """
        if self._store is None:
            raise RuntimeError(f"room {self.id!r} is not open")
        await flush_store(self._store, durable=True)

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        store = await open_store(
            self._core,
            self._path,
            self._write_delay,
            self._squash,
            create_dirs=True,
            fsync=self._fsync,
            # A room no client edits leaves no file behind: ids cost nothing on disk until used.
            create_lazily=True,
        )
        self._store = store
        try:
            await super().run(task_status=task_status)
        finally:
            self._store = None
            state = await close_store(store)
            # The room's cancellation keeps this frame alive in its traceback until the cyclic
            # GC runs: drop the store now, so its eventfd closes with the room.
            del store
            if state.error is not None:
                log.error("room %r: its last updates may not be on disk: %s", self.id, state.error)


def file_room_factory(
    directory: str | os.PathLike[str],
    *,
    write_delay: float = 0,
    squash: bool = False,
    fsync: Fsync = "flush",
) -> Callable[[str], FileRoom]:
    """A `room_factory` persisting every room of a server under `directory` (see `FileRoom`).

    ```py
    async with AsyncWebSocketServer(file_room_factory("data"), host="localhost", port=8000) as s:
        ...
        await s.room_manager.flush()  # every open room's updates are fsynced
    ```
    """
    check_fsync(fsync)
    return functools.partial(
        FileRoom, directory=directory, write_delay=write_delay, squash=squash, fsync=fsync
    )
