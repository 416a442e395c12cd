"""The WebSocket server: native (tokio, tungstenite); Python only opens and closes rooms."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from types import TracebackType

from anyio import create_task_group

from wiredb import AsyncServer, Room
from wiredb._wiredb import RoomRegistry, WebSocketServer, set_memory_limit

from ._auth import CLOSED_BY_SERVER, Authorize, Connection, check_close, serve_authorizations
from ._token import check_secret

#: How long leaving the server's context waits for connections to close.
STOP_TIMEOUT = 10.0


def _check_positive(integers: bool, **values: float) -> None:
    """Raises TypeError for what is not a number (an int with `integers`), ValueError for a
    number that is not positive and finite: a limit of 0 is a mistake, never "no limit"."""
    kinds: tuple[type, ...] = (int,) if integers else (int, float)
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, kinds):
            kind = "an integer" if integers else "a number"
            raise TypeError(f"{name} must be {kind}, not {type(value).__name__}")
        if not 0 < value < math.inf:
            raise ValueError(f"{name} must be positive and finite, not {value!r}")


class AsyncWebSocketServer(AsyncServer):
    """A y-websocket server: clients join the room named by their URL path.

    ```py
    async with AsyncWebSocketServer(host="localhost", port=8000) as server:
        await sleep_forever()
    ```
    It is listening when `async with` enters (`port=0` picks a free port, see `port`). Leaving
    it stops accepting, closes every connection with 1001 (handling what each client sent before
    it saw the close frame), then closes every room (so stores flush).

    Who may connect: `allowed_origins` (checked natively during the handshake), signed tokens
    (`token_secret`, verified natively; see `mint_token`) and an `authorize` hook:
    ```py
    async def authorize(request: Request) -> Allow | ReadOnly | Deny:
        if request.cookies.get("session") in editors:
            return Allow()
        return ReadOnly() if request.room.startswith("public/") else Deny(4403, "no")

    async with AsyncWebSocketServer(host="0.0.0.0", port=8000, authorize=authorize) as server:
        server.close_connections("notes", lambda c: c.identity == "mallory")
    ```
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
        write_timeout: float = 30.0,
        max_document_bytes: int = 256 << 20,
        max_awareness_state_bytes: int = 64 << 10,
        max_awareness_per_second: int = 60,
        max_waiting_bytes: int = 16 << 20,
        authorize: Authorize | None = None,
        token_secret: str | bytes | None = None,
        allowed_origins: Iterable[str] | None = None,
        auth_timeout: float = 10.0,
        max_pending_messages: int = 64,
        max_pending_bytes: int = 1 << 20,
        memory_limit: int | None = None,
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
            write_timeout: A connection that does not take what it is sent for this long (it
                stopped reading) is closed.
            max_document_bytes: A room's quota, counted as the bytes of the updates it
                accepted; an update beyond it closes its sender with 1009.
            max_awareness_state_bytes: Larger awareness states are not relayed.
            max_awareness_per_second: Awareness updates relayed per connection and second.
            max_waiting_bytes: Bytes of a connection's updates that may wait for earlier edits
                the room lacks (a client back with offline edits may send them before its
                sync step 2); past it, it is closed with 1008.
            authorize: Decides about each connection that brings no token, before its room is
                opened: given a `Request`, returns `Allow()`, `ReadOnly()` or `Deny(code,
                reason)` (an async function; a plain one works too).
            token_secret: Verify signed tokens (`mint_token`) natively; a connection then needs
                a valid one, or goes to `authorize` if there is one. At least 16 bytes: an
                empty or shorter one raises ValueError here (None serves without tokens).
            allowed_origins: Browser origins allowed (`https://app.example`); another
                `Origin` header is refused with HTTP 403. None: any.
            auth_timeout: Seconds a connection may wait for its decision (the hook is cancelled
                and the connection closed with 1013 past it).
            max_pending_messages: Messages a connection may send before it is decided (kept,
                then handled once let in); past it, it is closed with 1008.
            max_pending_bytes: The same, in bytes.
            memory_limit: The process-wide limit, in bytes, of what peers may make wiredb hold
                (messages being read, documents by their cost in memory, awareness states,
                frames queued for members; default 1 GiB). A connection that would pass it is
                closed with 1013. It applies to every server of the process.
        """
        super().__init__(room_factory)
        # Checked here, not when entering: a bad value is a configuration error, said at once.
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer from 0 to 65535, not {port!r}")
        _check_positive(
            True,
            max_message_bytes=max_message_bytes,
            max_connections=max_connections,
            max_document_bytes=max_document_bytes,
            max_awareness_state_bytes=max_awareness_state_bytes,
            max_awareness_per_second=max_awareness_per_second,
            max_waiting_bytes=max_waiting_bytes,
            max_pending_messages=max_pending_messages,
            max_pending_bytes=max_pending_bytes,
        )
        _check_positive(
            False,
            ping_interval=ping_interval,
            idle_timeout=idle_timeout,
            write_timeout=write_timeout,
            auth_timeout=auth_timeout,
        )
        if memory_limit is not None:
            set_memory_limit(memory_limit)
        self._host = host
        self._requested_port = port
        self._native_registry: Callable[[], RoomRegistry] = lambda: RoomRegistry(
            max_document_bytes=max_document_bytes,
            max_awareness_state_bytes=max_awareness_state_bytes,
            max_awareness_per_second=max_awareness_per_second,
            max_waiting_bytes=max_waiting_bytes,
        )
        secret = None if token_secret is None else check_secret(token_secret)
        if isinstance(allowed_origins, str | bytes):
            # A single string would be read as one origin per character.
            raise TypeError("allowed_origins is a list of origins, not one string")
        origins = None if allowed_origins is None else list(allowed_origins)
        self._authorize = authorize
        self._auth_timeout = auth_timeout
        self._native_server: Callable[[RoomRegistry], WebSocketServer] = lambda rooms: (
            WebSocketServer(
                rooms,
                max_message_bytes=max_message_bytes,
                max_connections=max_connections,
                ping_interval=ping_interval,
                idle_timeout=idle_timeout,
                write_timeout=write_timeout,
                authorize=authorize is not None,
                token_secret=secret,
                allowed_origins=origins,
                auth_timeout=auth_timeout,
                max_pending_messages=max_pending_messages,
                max_pending_bytes=max_pending_bytes,
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
            if self._authorize is not None:
                task_group = await stack.enter_async_context(create_task_group())
                stack.callback(task_group.cancel_scope.cancel)
                task_group.start_soon(
                    serve_authorizations, native, self._authorize, self._auth_timeout, task_group
                )
            self._native = native
            self._exit_stack = stack.pop_all()
        return self

    def _require_native(self) -> WebSocketServer:
        if self._native is None:
            raise RuntimeError("the server is not running")
        return self._native

    def connections(self, room: str) -> list[Connection]:
        """The connections of `room` that were let in (joined, or waiting for the room to
        open)."""
        return [Connection._from_native(c) for c in self._require_native().connections(room)]

    def _chosen(
        self, room: str, predicate: Callable[[Connection], bool] | None
    ) -> list[int] | None:
        if predicate is None:
            return None
        return [c.request.id for c in self.connections(room) if predicate(c)]

    def close_connections(
        self,
        room: str,
        predicate: Callable[[Connection], bool] | None = None,
        *,
        code: int = CLOSED_BY_SERVER,
        reason: str = "closed by the server",
    ) -> int:
        """Closes the connections of `room` that `predicate` picks (all without one) with
        `code` and `reason`. When this returns, no update from them is applied, even one
        already on its way. Codes 4000-4499 (the default is 4000) tell wiredb's clients not to
        reconnect; 1012 (service restart) asks them to.

        Returns:
            How many connections it closed.
        """
        check_close(code, reason)
        native = self._require_native()
        ids = self._chosen(room, predicate)
        if ids == []:
            return 0
        return native.close_connections(room, ids, code, reason)

    def set_read_only(
        self,
        room: str,
        predicate: Callable[[Connection], bool] | None = None,
        *,
        read_only: bool = True,
    ) -> int:
        """Makes the connections of `room` that `predicate` picks (all without one) read-only
        (or, with `read_only=False`, read-write again). When this returns, no update from a
        connection made read-only is applied; it is told with a permission-denied message and
        keeps receiving the document's updates.

        Returns:
            How many connections it changed.
        """
        native = self._require_native()
        ids = self._chosen(room, predicate)
        if ids == []:
            return 0
        return native.set_read_only(room, ids, read_only)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        native, self._native = self._native, None
        if native is not None:
            native.stop()
            await self.room_manager._wait_stopped(STOP_TIMEOUT)
        await self._exit_stack.aclose()
        self._port = None
