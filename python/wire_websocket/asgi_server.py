"""wire-websocket 0.7.1's module path `wire_websocket.asgi_server`: rooms served through any
ASGI server (uvicorn, hypercorn...), as the original served them.

The native `AsyncWebSocketServer` does not need it; this is for mounting rooms in an ASGI
application of your own. Each WebSocket becomes an `AsyncChannel`, which a room serves like
any other:
```py
manager = RoomManager()

async def serve(websocket: ASGIWebsocket) -> None:
    room = await manager.get_room(websocket.id.lstrip("/"))
    await room.serve(websocket)

app = ASGIServer(serve)   # run `async with manager:` around the ASGI server
```
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from anyio import EndOfStream

from wiredb import AsyncChannel

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ASGIWebsocket(AsyncChannel):
    """An accepted ASGI WebSocket as a channel: binary messages in and out. Its `id` is the
    request path (with its leading `/`, as in 0.7.1)."""

    def __init__(self, receive: Receive, send: Send, path: str) -> None:
        self._receive = receive
        self._send = send
        self._path = path

    @property
    def id(self) -> str:
        return self._path

    async def __anext__(self) -> bytes:
        try:
            return await self.receive()
        except EndOfStream:
            raise StopAsyncIteration() from None

    async def send(self, message: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": message})

    async def receive(self) -> bytes:
        """The next binary message (text messages are skipped).

        Raises:
            EndOfStream: the client disconnected.
        """
        while True:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                raise EndOfStream
            if kind == "websocket.receive" and message.get("bytes") is not None:
                return bytes(message["bytes"])


class ASGIServer:
    """An ASGI application that accepts every WebSocket and hands it to `serve` (which returns
    when the connection is done); it answers the lifespan protocol and nothing else."""

    def __init__(self, serve: Callable[[ASGIWebsocket], Awaitable[None]]) -> None:
        self._serve = serve

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "websocket":
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
                await self._serve(ASGIWebsocket(receive, send, scope["path"]))


__all__ = ["ASGIServer", "ASGIWebsocket"]
