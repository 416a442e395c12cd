"""The memory server: rooms in this process, joined by in-process peers of their native core."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from types import TracebackType
from weakref import WeakSet

from anyio import CancelScope, EndOfStream, notify_closing, wait_readable

from wiredb import AsyncChannel, AsyncServer, Room
from wiredb._delivery import readable
from wiredb._room import join_room
from wiredb._wiredb import Endpoint, RoomRegistry


class AsyncMemoryServer(AsyncServer):
    """A server for clients in the same process: each is a member of its room's native core,
    which syncs it with the room's other clients without Python in between.

    ```py
    async with AsyncMemoryServer() as server:
        async with AsyncMemoryClient("my_id", server=server) as client:
            client.doc.get("text", type=Text).insert(0, "Hello")
    ```
    Rooms open and close as on every server (the same room manager and native registry):
    opened by `room_factory` on the first join of an ID, closed when their last client leaves.
    Leaving the server's context ends the connections still open, then closes every room.
    """

    def __init__(
        self,
        room_factory: Callable[[str], Room] = Room,
        *,
        max_document_bytes: int = 256 << 20,
        max_awareness_state_bytes: int = 64 << 10,
        max_awareness_per_second: int = 60,
    ) -> None:
        """
        Args:
            room_factory: Creates the room of an ID on its first join (default: `Room`).
            max_document_bytes: A room's quota (the bytes of the updates it accepted); an
                update beyond it is refused (`send` raises ValueError).
            max_awareness_state_bytes: Larger awareness states are not relayed.
            max_awareness_per_second: Awareness updates relayed per client and second.
        """
        super().__init__(room_factory)
        self._limits = (max_document_bytes, max_awareness_state_bytes, max_awareness_per_second)
        self._channels: WeakSet[Memory] = WeakSet()

    async def __aenter__(self) -> AsyncMemoryServer:
        self.room_manager._prepare_registry(RoomRegistry(*self._limits))
        await self.room_manager.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        for channel in list(self._channels):
            channel._end(1001, "server shutting down")
        self._channels.clear()
        await self.room_manager.__aexit__(exc_type, exc_val, exc_tb)

    async def connect(self, id: str) -> Memory:
        """Joins room `id` (opened first if needed) and returns the client's end.

        Raises:
            ConnectionError: the room could not be opened.
        """
        endpoint = await join_room(self.room_manager._require_registry(), id)
        channel = Memory(endpoint, id)
        self._channels.add(channel)
        return channel


#: The memory channels waiting in `receive()`, by thread and room ID.
_receiving: dict[tuple[int, str], set[Memory]] = {}


class Memory(AsyncChannel):
    """A memory client's channel: y-websocket frames to and from its member of the room.

    It counts what it carries (`send_nb`, `receive_nb`). It is an ordinary `AsyncChannel`, so
    it syncs any document with `wiredb.AsyncClient`:
    ```py
    channel = await server.connect("my_id")
    async with AsyncClient(channel) as client:
        ...
    channel.close()
    ```
    """

    def __init__(self, endpoint: Endpoint, id: str) -> None:
        """
        Args:
            endpoint: The room member (from `AsyncMemoryServer.connect`).
            id: The room ID.
        """
        self._endpoint: Endpoint | None = endpoint
        self._id = id
        self._frames: deque[bytes] = deque()
        self._ended = False
        self._waiting = 0
        self._wake_scope: CancelScope | None = None
        self.send_nb = 0
        self.receive_nb = 0

    @property
    def id(self) -> str:
        return self._id

    @property
    def delivery_pending(self) -> bool:
        """Whether frames from the room wait to be received (see `wiredb.wait_delivered`)."""
        if self._frames:
            return True
        endpoint = self._endpoint
        return endpoint is not None and not self._ended and readable(endpoint.fd)

    async def __anext__(self) -> bytes:
        try:
            return await self.receive()
        except (EndOfStream, ConnectionError):
            raise StopAsyncIteration() from None

    async def send(self, message: bytes) -> None:
        """Hands a frame to the room (applied and relayed before this returns), and wakes the
        room's other memory channels of this thread that wait in `receive()`.

        Raises:
            ConnectionError: the channel is closed.
            ValueError: the frame is malformed or its update rejected.
        """
        if self._endpoint is None or self._ended:
            raise ConnectionError(f"the memory channel of room {self._id!r} is closed")
        self._endpoint.send_frame(bytes(message))
        self.send_nb += 1
        # The room queued the frame for its members and made their eventfds readable, but an
        # event loop sees that only when it polls (asyncio: between callbacks). Waking the
        # receivers here makes them runnable before this task yields, as 0.7.1's memory
        # streams did: once every task is blocked (`wait_all_tasks_blocked()`), the frame
        # has been handled.
        for peer in list(_receiving.get((threading.get_ident(), self._id), ())):
            if peer is not self and peer._wake_scope is not None:
                peer._wake_scope.cancel()

    async def receive(self) -> bytes:
        """The next frame from the room.

        Raises:
            EndOfStream: the channel was closed (by either side).
        """
        while not self._frames:
            endpoint = self._endpoint
            if endpoint is None or self._ended:
                raise EndOfStream
            self._waiting += 1
            key = (threading.get_ident(), self._id)
            receiving = _receiving.setdefault(key, set())
            receiving.add(self)
            try:
                # Cancelled by a sender of this process (see `send`) or readable.
                with CancelScope() as self._wake_scope:
                    await wait_readable(endpoint.fd)
            finally:
                self._wake_scope = None
                receiving.discard(self)
                if not receiving:
                    _receiving.pop(key, None)
                self._waiting -= 1
            frames, closed = endpoint.receive_frames()
            self._frames.extend(frames)
            if closed is not None:
                self._ended = True
        self.receive_nb += 1
        return self._frames.popleft()

    def _end(self, code: int, reason: str) -> None:
        """Leaves the room; what the room sent before can still be received."""
        if self._endpoint is not None:
            self._endpoint.close(code, reason)

    def close(self) -> None:
        """Leaves the room (which closes if this was its last client) and frees the channel's
        descriptor. A task waiting in `receive()` gets `ClosedResourceError`."""
        endpoint, self._endpoint = self._endpoint, None
        self._ended = True
        if endpoint is not None:
            endpoint.close()
            if self._waiting:
                notify_closing(endpoint.fd)
            endpoint.release()
