"""Servers: a native server whose rooms are opened and closed by a Python room manager."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType

from anyio import Event, wait_readable
from anyio.abc import TaskGroup

from ._room import Room, RoomManager
from ._wiredb import WebSocketServer

log = logging.getLogger("wiredb")


class AsyncServer(ABC):
    """The base of every server: rooms created by `room_factory`, listed by `room_manager`.

    Servers are async context managers, listening on entry:
    ```py
    async with AsyncWebSocketServer(host="localhost", port=8000) as server:
        ...
    ```
    """

    def __init__(self, room_factory: Callable[[str], Room] = Room) -> None:
        """
        Args:
            room_factory: Creates the room of an ID on its first join (default: `Room`).
        """
        self._room_manager = RoomManager(room_factory)

    @property
    def room_manager(self) -> RoomManager:
        """The open rooms."""
        return self._room_manager

    @abstractmethod
    async def __aenter__(self) -> AsyncServer: ...

    @abstractmethod
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None: ...


async def dispatch_room_events(
    native: WebSocketServer, manager: RoomManager, task_group: TaskGroup, stopped: Event
) -> None:
    """Opens and closes rooms when the native registry asks, until the server has stopped."""

    async def open_room(id: str) -> None:
        try:
            room = await manager._open(id)
        except Exception as error:
            log.exception("room %r could not be opened", id)
            native.open_failed(id, repr(error))
            return
        native.opened(id, room._core)

    async def close_room(id: str) -> None:
        try:
            await manager._close(id)
        finally:
            native.closed(id)

    while True:
        await wait_readable(native.fd)
        for kind, id in native.events():
            if kind == "open":
                task_group.start_soon(open_room, id)
            elif kind == "close":
                task_group.start_soon(close_room, id)
            elif kind == "stopped":
                stopped.set()
                return
