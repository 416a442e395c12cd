"""wire-websocket 0.7.1's module path `wire_websocket.client`.

The clients here connect natively (no httpx). `HttpxWebSocket` and `HttpxAsyncWebSocket`, the
original's channels over an httpx-ws session, are kept for code that syncs a document over a
session of its own (`Client(HttpxWebSocket(session, id))`); they work with any object that has
the session's `send_bytes` and `receive_bytes`.
"""

from __future__ import annotations

from queue import Empty
from typing import Protocol

from anyio import Lock

from wiredb import AsyncChannel, Channel

from ._client import AsyncWebSocketClient as AsyncWebSocketClient
from ._client import WebSocketClient as WebSocketClient


class BlockingSession(Protocol):
    """What `HttpxWebSocket` needs of httpx-ws's `WebSocketSession`."""

    def send_bytes(self, data: bytes) -> None: ...
    def receive_bytes(self, timeout: float | None = None) -> bytes: ...


class AsyncSession(Protocol):
    """What `HttpxAsyncWebSocket` needs of httpx-ws's `AsyncWebSocketSession`."""

    async def send_bytes(self, data: bytes) -> None: ...
    async def receive_bytes(self, timeout: float | None = None) -> bytes: ...


class HttpxWebSocket(Channel):
    """A blocking channel over an httpx-ws `WebSocketSession` (or any `BlockingSession`)."""

    def __init__(self, websocket: BlockingSession, path: str) -> None:
        self._websocket = websocket
        self._path = path

    @property
    def id(self) -> str:
        return self._path

    def send(self, message: bytes) -> None:
        self._websocket.send_bytes(message)

    def receive(self, timeout: float | None = None) -> bytes:
        """The next message; `TimeoutError` if none came within `timeout` seconds (httpx-ws
        reports that as `queue.Empty`)."""
        try:
            return bytes(self._websocket.receive_bytes(timeout))
        except Empty:
            raise TimeoutError() from None


class HttpxAsyncWebSocket(AsyncChannel):
    """An async channel over an httpx-ws `AsyncWebSocketSession` (or any `AsyncSession`);
    sends are serialized, as a WebSocket takes one message at a time."""

    def __init__(self, websocket: AsyncSession, path: str) -> None:
        self._websocket = websocket
        self._path = path
        self._send_lock = Lock()

    @property
    def id(self) -> str:
        return self._path

    async def send(self, message: bytes) -> None:
        async with self._send_lock:
            await self._websocket.send_bytes(message)

    async def receive(self) -> bytes:
        return bytes(await self._websocket.receive_bytes())


__all__ = [
    "AsyncWebSocketClient",
    "HttpxAsyncWebSocket",
    "HttpxWebSocket",
    "WebSocketClient",
]
