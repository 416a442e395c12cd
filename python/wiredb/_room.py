"""Rooms: a native room core, plus the Python side users subclass (tasks, a `doc` mirror)."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import Any, Self

from anyio import (
    TASK_STATUS_IGNORED,
    AsyncContextManagerMixin,
    BusyResourceError,
    Event,
    create_task_group,
    current_effective_deadline,
    move_on_after,
    sleep,
    sleep_forever,
    wait_readable,
)
from anyio.abc import TaskGroup, TaskStatus
from pycrdt import Doc

from ._channel import AsyncChannel
from ._doc import Doc as WireDoc
from ._links import wait_link
from ._log import bounded_traceback, clipped, describe
from ._sync import DocSync
from ._wiredb import Endpoint, RoomCore, RoomRegistry

log = logging.getLogger("wiredb")

#: The close code (and reason) of a failed room's clients: an internal error, try again later.
ROOM_FAILED = 1011
ROOM_FAILED_REASON = "the room failed"


class Room(AsyncContextManagerMixin):
    """A room: the document shared by the clients that joined with the same ID.

    The document lives in Rust and clients are synced there without running Python. Subclass
    `Room` to run tasks for as long as the room is open, for instance to persist it:
    ```py
    class PersistedRoom(Room):
        async def run(self, *, task_status=TASK_STATUS_IGNORED):
            await self.task_group.start(self.persist)
            await super().run(task_status=task_status)

        async def persist(self, *, task_status):
            path = f"data/{room_file_name(self.id)}"  # wire_file's: no ID escapes "data"
            async with AsyncFileClient(doc=self.doc, path=path):
                task_status.started()
                await sleep_forever()

    async with AsyncWebSocketServer(PersistedRoom, host="localhost", port=8000):
        ...
    ```
    (`wire_file.FileRoom` does the same natively, with no Python per update.)
    A server enters the room and waits for `run()` to report started before it syncs the room's
    first client, and closes it (cancelling `run()` and the task group) when its last client
    leaves. What the room raises once started (in `run()`, a task of its task group, or as it
    closes) closes this room only: it is logged once, its clients are closed with 1011 (they
    reconnect), and the next client of its ID gets a fresh room; the server and every other
    room go on. An exception before `run()` reports started refuses the room's clients.
    """

    def __init__(self, id: str) -> None:
        """
        Args:
            id: The room ID (the URL path of its WebSocket clients, without the leading `/`).
        """
        self._id = id
        self._core = RoomCore(id)
        self._doc: Doc[Any] | None = None
        self._mirror: DocSync | None = None
        self._task_group: TaskGroup | None = None
        # Set by the room manager that opened the room: peers then hold it open.
        self._registry: RoomRegistry | None = None

    @property
    def id(self) -> str:
        """The room ID."""
        return self._id

    @property
    def task_group(self) -> TaskGroup:
        """The room's task group, for background tasks; cancelled when the room closes."""
        if self._task_group is None:
            raise RuntimeError("the room is not open: its task group exists inside `async with`")
        return self._task_group

    @property
    def doc(self) -> Doc[Any]:
        """The room's document, as a `pycrdt.Doc` kept in sync with the native room both ways.

        Created on first access; a room that never touches it costs no Python per update.
        """
        if self._doc is None:
            doc = WireDoc()
            endpoint = self._core.mirror()
            mirror = DocSync(endpoint, doc, auto_push=True, auto_pull=True)
            # The room queued its whole document for the mirror: apply it now.
            mirror.process(endpoint.receive())
            self._doc, self._mirror = doc, mirror
            if self._task_group is not None:
                self._task_group.start_soon(self._pump_mirror, mirror)
        return self._doc

    async def _pump_mirror(self, mirror: DocSync) -> None:
        while mirror.closed is None:
            await wait_link(mirror.endpoint)
            mirror.process(mirror.endpoint.receive())

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        try:
            async with create_task_group() as task_group:
                self._task_group = task_group
                if self._mirror is not None:
                    task_group.start_soon(self._pump_mirror, self._mirror)
                if type(self).run is not _waiting_run:
                    # The base `run()` only waits to be cancelled: no task for that (a task
                    # is about 6 KiB a room: w4, 1000 rooms).
                    await task_group.start(self.run)
                try:
                    yield self
                finally:
                    task_group.cancel_scope.cancel()
        finally:
            self._task_group = None
            if self._mirror is not None:
                self._mirror.stop()
                endpoint = self._mirror.endpoint
                endpoint.close()
                if isinstance(endpoint, Endpoint):
                    endpoint.release()

    async def serve(
        self, channel: AsyncChannel, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED
    ) -> None:
        """Serves a client over a channel of your own (a custom wire) until the channel ends.

        The channel is a member of the room like any WebSocket client: it is sent the room's
        sync step 1 and awareness, its updates go to every other member, and a malformed or
        rejected message ends it (the room goes on). In a server's room, it holds the room open
        like any client: the room closes when its last client of any wire has left.

        It returns (without raising) when the channel ends: its `receive()` raises
        `StopAsyncIteration` or any other error (a closed stream, a vanished peer), its
        `send()` raises, or the room disconnects the member. An error is logged, and only this
        member leaves the room.
        """
        if self._registry is None:
            endpoint = self._core.peer()
        else:
            endpoint = await join_room(self._registry, self._id)
        try:
            async with create_task_group() as task_group:
                task_group.start_soon(self._forward_to_channel, endpoint, channel, task_group)
                task_status.started()
                await self._forward_to_room(endpoint, channel)
                task_group.cancel_scope.cancel()
        finally:
            endpoint.close()
            endpoint.release()

    async def _forward_to_room(self, endpoint: Endpoint, channel: AsyncChannel) -> None:
        """Applies what the channel receives until it ends (never raises but cancellation)."""
        try:
            async for message in channel:
                endpoint.send_frame(bytes(message))
        except ValueError as error:
            log.warning(
                "room %s: closing channel %s: %s",
                clipped(self._id),
                clipped(channel.id),
                describe(error),
            )
        except Exception as error:
            log.info(
                "room %s: channel %s ended receiving: %s",
                clipped(self._id),
                clipped(channel.id),
                describe(error),
            )

    async def _forward_to_channel(
        self, endpoint: Endpoint, channel: AsyncChannel, task_group: TaskGroup
    ) -> None:
        """Sends the member's frames to the channel; ends the member (cancels `task_group`)
        when the channel fails to send or the room closed the member."""
        try:
            while True:
                await wait_readable(endpoint.fd)
                frames, closed = endpoint.receive_frames()
                for frame in frames:
                    await channel.send(frame)
                if closed is not None:
                    log.debug(
                        "room %s: closed channel %s: %s",
                        clipped(self._id),
                        clipped(channel.id),
                        clipped(closed),
                    )
                    return
        except Exception as error:
            log.info(
                "room %s: channel %s ended sending: %s",
                clipped(self._id),
                clipped(channel.id),
                describe(error),
            )
        finally:
            task_group.cancel_scope.cancel()

    async def flush(self) -> None:
        """Returns once what the room applied so far is durable wherever the room persists it.

        The base room persists nothing, so it returns at once; `wire_file.FileRoom` waits for
        its file, and a subclass that persists otherwise overrides this.
        """

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        """The room's main task: reports started, then runs until the room closes.

        Override it to start tasks in `task_group` first, then call `super().run()`.
        """
        task_status.started()
        await sleep_forever()


# `Room.run` as defined above (not as patched later): a room that keeps it needs no task.
_waiting_run = Room.run


def _forget(entries: dict[str, Any], id: str, entry: object) -> None:
    """Removes `entries[id]` if it is `entry`."""
    if id in entries and entries[id] is entry:
        del entries[id]


def _log_open_failure(id: str, error: BaseException) -> None:
    """A room that could not be opened: a refused id (the factory's ValueError, such as an id
    no file can be named after) is a warning about what a client asked for, in one line; any
    other failure is an error, with its (bounded) traceback."""
    leaf = error
    while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]
    if isinstance(leaf, ValueError):
        log.warning("room %s refused: %s", clipped(id), describe(leaf))
    else:
        log.error("room %s could not be opened:\n%s", clipped(id), bounded_traceback(error))


async def join_room(registry: RoomRegistry, id: str) -> Endpoint:
    """Joins the room `id` as an in-process peer, once the room is open (opened if needed).

    Raises:
        ConnectionError: the room could not be opened.
    """
    pending = registry.join(id)
    while not pending.done:
        await wait_readable(pending.fd)
    return pending.endpoint()


class RoomManager(AsyncContextManagerMixin):
    """The open rooms of a server, created by `room_factory` on the first join of an ID.

    Rooms are kept by a native registry that every wire of the server joins through, so one
    ID is one room whatever the wire, and a room closes when its last client has left.
    ```py
    async with RoomManager() as manager:
        room = await manager.get_room("my_id")
    ```
    """

    def __init__(self, room_factory: Callable[[str], Room] = Room) -> None:
        self._room_factory = room_factory
        self._rooms: dict[str, Room] = {}
        self._closers: dict[str, Event] = {}
        self._closed: dict[str, Event] = {}
        self._task_group: TaskGroup | None = None
        self._registry: RoomRegistry | None = None
        self._stopped = Event()

    @property
    def rooms(self) -> Mapping[str, Room]:
        """The open rooms by ID (a read-only view)."""
        return MappingProxyType(self._rooms)

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        registry = self._prepare_registry()
        try:
            async with create_task_group() as task_group:
                self._task_group, self._registry = task_group, registry
                self._stopped = Event()
                task_group.start_soon(self._dispatch, registry, task_group)
                try:
                    yield self
                finally:
                    task_group.cancel_scope.cancel()
                    self._task_group = self._registry = None
        finally:
            # Not left to the garbage collector: the cancelled dispatcher may sit in a cycle.
            registry.close()

    def _prepare_registry(self, registry: RoomRegistry | None = None) -> RoomRegistry:
        """The registry that the next `async with` uses (`registry`, or a default one), set
        now: a wire that must bind first gets it before the manager runs, and calls
        `_discard_registry` if that fails."""
        if self._task_group is not None:
            raise RuntimeError("the room manager is already running")
        if registry is not None:
            self._registry = registry
        elif self._registry is None:
            self._registry = RoomRegistry()
        return self._registry

    def _discard_registry(self) -> None:
        if self._task_group is None:
            self._registry = None

    def _require_registry(self) -> RoomRegistry:
        if self._registry is None or self._task_group is None:
            raise RuntimeError("the room manager is not running: use it in `async with`")
        return self._registry

    async def flush(self) -> None:
        """Flushes every open room (`Room.flush()`), one after the other; if some fail, the
        others are still flushed, then the first error is raised (the others are logged)."""
        errors: list[Exception] = []
        for room in list(self._rooms.values()):
            try:
                await room.flush()
            except Exception as error:
                if errors:
                    log.error("room %s could not be flushed: %s", clipped(room.id), describe(error))
                errors.append(error)
        if errors:
            raise errors[0]

    async def get_room(self, id: str) -> Room:
        """The open room `id`, opened (created, entered, started) if needed.

        A room opened here stays open until a client joins it and leaves (or the manager
        closes).

        Raises:
            ConnectionError: the room factory failed, or the room failed as it opened.
        """
        pending = self._require_registry().join(id)
        while not pending.done:
            await wait_readable(pending.fd)
        pending.keep_open()
        room = self._rooms.get(id)
        if room is None:
            # It failed (and was forgotten) before this task ran again.
            raise ConnectionError(f"room {clipped(id)} failed as it opened")
        return room

    async def _wait_stopped(self, timeout: float) -> None:
        """Returns once the wire said its peers are gone (the "stopped" event of the registry,
        which follows the wire's native `stop()`), or after `timeout` seconds.

        Leaving a server by cancellation (Ctrl-C, a cancelled task group, `move_on_after`)
        cancels the dispatcher too, so nobody would report that event: the wait would last the
        whole timeout. Then the registry is read here instead; only "stopped" matters, since
        the manager closes every room next anyway.
        """
        cancelled = current_effective_deadline() == -math.inf
        with move_on_after(timeout, shield=True):
            registry = self._registry
            if not cancelled or registry is None:
                await self._stopped.wait()
                return
            while not self._stopped.is_set():
                try:
                    await wait_readable(registry.fd)
                except BusyResourceError:
                    # The cancelled dispatcher has not left its own wait yet.
                    await sleep(0)
                    continue
                if any(kind == "stopped" for kind, _ in registry.events()):
                    return

    async def _dispatch(self, registry: RoomRegistry, task_group: TaskGroup) -> None:
        """Opens and closes rooms when the registry asks, until the manager closes."""

        async def open_room(id: str) -> None:
            try:
                # `_hold` tells the registry that the room is open: no await in between.
                await task_group.start(self._hold, registry, id)
            except Exception as error:
                _log_open_failure(id, error)
                # The reason reaches the joiners' logs: bounded, like a log line.
                registry.open_failed(id, describe(error))

        async def close_room(id: str) -> None:
            try:
                await self._close(id)
            finally:
                registry.closed(id)

        while True:
            await wait_readable(registry.fd)
            for kind, id in registry.events():
                if kind == "open":
                    task_group.start_soon(open_room, id)
                elif kind == "close":
                    task_group.start_soon(close_room, id)
                elif kind == "stopped":
                    self._stopped.set()

    async def _hold(
        self, registry: RoomRegistry, id: str, *, task_status: TaskStatus[Room]
    ) -> None:
        """Creates, enters and runs the room `id` until it is asked to close. What the room
        raises once started (its `run()`, a task of its task group, its exit) closes this
        room only: it is logged, its clients are closed with 1011 and the next join of `id`
        gets a fresh room."""
        close, closed = Event(), Event()
        self._closers[id], self._closed[id] = close, closed
        room: Room | None = None
        started = False
        try:
            room = self._room_factory(id)
            room._registry = registry
            try:
                async with room:
                    self._rooms[id] = room
                    registry.opened(id, room._core)
                    started = True
                    task_status.started(room)
                    await close.wait()
            except* Exception as failure:
                if not started:
                    raise
                self._fail(registry, room, failure, closing=close.is_set())
        finally:
            if room is not None:
                room._registry = None
            # Only this room's entries: a fresh room of the same id may have replaced them.
            _forget(self._rooms, id, room)
            _forget(self._closers, id, close)
            _forget(self._closed, id, closed)
            closed.set()
            if room is not None and started:
                # The registry is done with it: its document goes now, not when the collector
                # frees a closed room kept alive by a reference cycle.
                room._core.release()

    def _fail(
        self, registry: RoomRegistry, room: Room, failure: BaseException, *, closing: bool
    ) -> None:
        """Logs a room's failure once and closes that room alone."""
        if closing:
            what = "failed while closing"
        else:
            registry.failed(room.id, room._core, ROOM_FAILED, ROOM_FAILED_REASON)
            what = f"failed; its clients were closed with {ROOM_FAILED}"
        log.error("room %s %s:\n%s", clipped(room.id), what, bounded_traceback(failure))

    async def _close(self, id: str) -> None:
        """Closes the room `id` (cancels its tasks) and waits until it is closed."""
        close, closed = self._closers.get(id), self._closed.get(id)
        if close is None or closed is None:
            return
        close.set()
        await closed.wait()
