"""Waiting on a native `FileStore` from asyncio, trio or plain threads.

The store works on tokio's blocking pool and makes its eventfd readable when its state changes;
async code awaits `anyio.wait_readable(fd)` (no thread per waiting coroutine), blocking code waits
on the fd without the GIL.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Literal, get_args

from anyio import CancelScope, wait_readable

from wiredb._wiredb import FileStore, RoomCore, StoreState

log = logging.getLogger("wire_file")

Path = str | os.PathLike[str]

#: When a store fsyncs: never ("none"), on `flush()` and close ("flush"), after every write
#: ("always"). See the README's persistence section for what each acknowledges.
Fsync = Literal["none", "flush", "always"]
FSYNC_POLICIES: tuple[str, ...] = get_args(Fsync)


def check_fsync(fsync: str) -> None:
    if fsync not in FSYNC_POLICIES:
        raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, not {fsync!r}")


def _loaded(state: StoreState) -> bool:
    return state.phase != "loading"


def _finished(state: StoreState) -> bool:
    return state.phase in ("closed", "failed")


async def wait_store(store: FileStore, done: Callable[[StoreState], bool]) -> StoreState:
    """Waits until `done(state)` holds."""
    while True:
        state = store.poll()
        if done(state):
            return state
        await wait_readable(store.fd)


def wait_store_blocking(store: FileStore, done: Callable[[StoreState], bool]) -> StoreState:
    """Blocks (without the GIL) until `done(state)` holds."""
    while True:
        state = store.poll()
        if done(state):
            return state
        store.wait()


def _opened(store: FileStore, state: StoreState) -> None:
    """Raises why opening failed; warns about a cut tail."""
    if state.phase == "failed":
        state.check()
        raise RuntimeError(f"cannot open {store.path}")  # pragma: no cover (check raised)
    if state.torn_bytes:
        log.warning(
            "%s: cut off a torn or undecodable tail of %d bytes (a crash while writing?); "
            "loaded the %d complete records before it",
            store.path,
            state.torn_bytes,
            state.records,
        )


async def open_store(
    room: RoomCore,
    path: Path,
    write_delay: float,
    squash: bool,
    create_dirs: bool = False,
    fsync: str = "flush",
    create_lazily: bool = False,
) -> FileStore:
    """Attaches a store to `room` and waits until the file is loaded into it (with
    `create_lazily`, a missing file is created at the first write)."""
    store = FileStore(room, os.fspath(path), write_delay, squash, create_dirs, fsync, create_lazily)
    try:
        state = await wait_store(store, _loaded)
        _opened(store, state)
    except BaseException:
        store.close()
        raise
    return store


def open_store_blocking(
    room: RoomCore, path: Path, write_delay: float, squash: bool, fsync: str = "flush"
) -> FileStore:
    store = FileStore(room, os.fspath(path), write_delay, squash, False, fsync)
    try:
        _opened(store, wait_store_blocking(store, _loaded))
    except BaseException:
        store.close()
        raise
    return store


def _flushed(ticket: int, durable: bool) -> Callable[[StoreState], bool]:
    """The state is final for `ticket`: done, failed, or the store is gone."""

    def done(state: StoreState) -> bool:
        reached = state.durable if durable else state.written
        return reached >= ticket or state.failed >= ticket or _finished(state)

    return done


def _raise_unless_done(store: FileStore, state: StoreState, ticket: int, durable: bool) -> None:
    reached = state.durable if durable else state.written
    if reached >= ticket:
        return
    state.check()
    what = "made durable" if durable else "written"
    if state.failed >= ticket:
        raise OSError(f"{store.path}: the edits could not be {what}")
    raise RuntimeError(f"{store.path}: the store closed before the edits were {what}")


async def flush_store(store: FileStore, durable: bool) -> None:
    """Writes everything the store's room applied so far and returns once it is written (with
    `durable`: durable under the store's fsync policy); raises the error (an `OSError` for
    ENOSPC, EIO...) if the attempt failed: then nothing it covered is acknowledged."""
    ticket = store.flush(durable)
    state = await wait_store(store, _flushed(ticket, durable))
    _raise_unless_done(store, state, ticket, durable)


def flush_blocking(store: FileStore, durable: bool = False) -> None:
    """`flush_store`, blocking (without the GIL)."""
    ticket = store.flush(durable)
    state = wait_store_blocking(store, _flushed(ticket, durable))
    _raise_unless_done(store, state, ticket, durable)


async def close_store(store: FileStore) -> StoreState:
    """Closes the store and waits, even if cancelled, until what was pending is on disk."""
    store.close()
    with CancelScope(shield=True):
        state = await wait_store(store, _finished)
    return state


def close_store_blocking(store: FileStore) -> StoreState:
    store.close()
    return wait_store_blocking(store, _finished)
