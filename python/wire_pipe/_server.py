"""The pipe server: rooms served over socketpairs and OS pipes, with frames read and written
in Rust (each prefixed by its length: any size and content arrives whole)."""

from __future__ import annotations

import os
from collections.abc import Callable
from types import TracebackType
from typing import overload

from wiredb import AsyncServer, Room
from wiredb._wiredb import PipeServer, RoomRegistry

#: How long leaving the server's context waits for its peers to close.
STOP_TIMEOUT = 10.0


class AsyncPipeServer(AsyncServer):
    """A server for clients at the other end of a pipe, in this process or another.

    ```py
    async with AsyncPipeServer() as server:
        connection = await server.connect("my_id")
        # In this process, or in a child that inherited the descriptors:
        async with AsyncPipeClient("my_id", connection=connection) as client:
            ...
    ```
    Rooms open and close as on every server (the same room manager and native registry).
    Leaving the server's context ends every connection (after what was queued for it), then
    closes every room.
    """

    def __init__(
        self,
        room_factory: Callable[[str], Room] = Room,
        *,
        max_message_bytes: int = 64 << 20,
        max_document_bytes: int = 256 << 20,
        max_awareness_state_bytes: int = 64 << 10,
        max_awareness_per_second: int = 60,
    ) -> None:
        """
        Args:
            room_factory: Creates the room of an ID on its first join (default: `Room`).
            max_message_bytes: A larger message ends its connection.
            max_document_bytes: A room's quota (the bytes of the updates it accepted); an
                update beyond it ends its sender's connection.
            max_awareness_state_bytes: Larger awareness states are not relayed.
            max_awareness_per_second: Awareness updates relayed per connection and second.
        """
        super().__init__(room_factory)
        self._max_message_bytes = max_message_bytes
        self._limits = (max_document_bytes, max_awareness_state_bytes, max_awareness_per_second)
        self._native: PipeServer | None = None

    async def __aenter__(self) -> AsyncPipeServer:
        self.room_manager._prepare_registry(RoomRegistry(*self._limits))
        await self.room_manager.__aenter__()
        registry = self.room_manager._require_registry()
        self._native = PipeServer(registry, self._max_message_bytes)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        native, self._native = self._native, None
        try:
            if native is not None:
                native.stop()
                await self.room_manager._wait_stopped(STOP_TIMEOUT)
        finally:
            await self.room_manager.__aexit__(exc_type, exc_val, exc_tb)

    @overload
    async def connect(self, id: str) -> tuple[int, int]: ...

    @overload
    async def connect(self, id: str, server_sender: int, server_receiver: int) -> None: ...

    async def connect(
        self, id: str, server_sender: int | None = None, server_receiver: int | None = None
    ) -> tuple[int, int] | None:
        """Adds a client of room `id`.

        Without arguments, returns the client's end of a new socketpair as a tuple of two
        descriptors, `(sender, receiver)` (two descriptors of the one socket, so that code
        written for wire-pipe 0.7.1's tuple keeps working): for `AsyncPipeClient(connection=...)`,
        here or in a child process (`subprocess.Popen(..., pass_fds=connection)`, then close
        both here, so that the connection ends when the child does). The client takes
        ownership of them.

        With `server_sender` and `server_receiver` (the server's ends of two pipes, or the same
        socket twice), serves the client over them instead, takes ownership of them, and
        returns None.
        """
        if self._native is None:
            raise RuntimeError("the server is not running: use it in `async with`")
        if server_sender is None and server_receiver is None:
            fd = self._native.connect(id)
            try:
                return fd, os.dup(fd)
            except OSError:
                os.close(fd)
                raise
        if server_sender is None or server_receiver is None:
            raise ValueError("give both server_sender and server_receiver, or neither")
        self._native.attach(id, server_sender, server_receiver)
        return None
