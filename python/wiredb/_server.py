"""Servers: wires whose rooms are opened and closed by a Python room manager."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType

from ._room import Room, RoomManager

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
