"""The WebSocket server: native (tokio, tungstenite); Python only opens and closes rooms."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType

from anyio import move_on_after

from wiredb import AsyncServer, Room
from wiredb._wiredb import RoomRegistry, WebSocketServer

#: How long leaving the server's context waits for connections to close.
STOP_TIMEOUT = 10.0


class AsyncWebSocketServer(AsyncServer):
    """A y-websocket server: clients join the room named by their URL path.

    ```py
    async with AsyncWebSocketServer(host="localhost", port=8000) as server:
        await sleep_forever()
    ```
    It is listening when `async with` enters (`port=0` picks a free port, see `port`). Leaving
    it closes every connection with 1001 and then every room.
    """

    def __init__(
        self,
        room_factory: Callable[[str], Room] = Room,
        *,
        host: str,
        port: int,
        max_message_bytes: int = 64 << 20,
        max_connections: int = 10_000,
        ping_interval: float = 30.0,
        idle_timeout: float = 90.0,
        max_document_bytes: int = 256 << 20,
        max_awareness_state_bytes: int = 64 << 10,
        max_awareness_per_second: int = 60,
    ) -> None:
        """
        Args:
            room_factory: Creates the room of an ID on its first join (default: `Room`).
            host: The interface to listen on (`localhost`, `0.0.0.0`, an address).
            port: The port to listen on; 0 for any free port.
            max_message_bytes: Larger messages close their connection with code 1009.
            max_connections: Connections served at once; more wait to be accepted.
            ping_interval: Seconds between keepalive pings.
            idle_timeout: A connection silent (not even a pong) this long is closed.
            max_document_bytes: A room's quota, counted as the bytes of the updates it
                accepted; an update beyond it closes its sender with 1009.
            max_awareness_state_bytes: Larger awareness states are not relayed.
            max_awareness_per_second: Awareness updates relayed per connection and second.
        """
        super().__init__(room_factory)
        self._host = host
        self._requested_port = port
        self._native_registry: Callable[[], RoomRegistry] = lambda: RoomRegistry(
            max_document_bytes=max_document_bytes,
            max_awareness_state_bytes=max_awareness_state_bytes,
            max_awareness_per_second=max_awareness_per_second,
        )
        self._native_server: Callable[[RoomRegistry], WebSocketServer] = lambda rooms: (
            WebSocketServer(
                rooms,
                max_message_bytes=max_message_bytes,
                max_connections=max_connections,
                ping_interval=ping_interval,
                idle_timeout=idle_timeout,
            )
        )
        self._port: int | None = None
        self._native: WebSocketServer | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The port the server listens on (the bound one when created with `port=0`)."""
        if self._port is None:
            raise RuntimeError("the server is not running")
        return self._port

    async def __aenter__(self) -> AsyncWebSocketServer:
        registry = self.room_manager._prepare_registry(self._native_registry())
        try:
            native = self._native_server(registry)
            # Bound (or failed with a plain OSError) before anything else starts.
            self._port = native.start(self._host, self._requested_port)
        except BaseException:
            self.room_manager._discard_registry()
            raise
        async with AsyncExitStack() as stack:
            stack.callback(native.stop)
            await stack.enter_async_context(self.room_manager)
            self._native = native
            self._exit_stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        native, self._native = self._native, None
        if native is not None:
            native.stop()
            with move_on_after(STOP_TIMEOUT, shield=True):
                await self.room_manager._wait_stopped()
        await self._exit_stack.aclose()
        self._port = None
