"""A pycrdt-websocket `WebsocketServer` (rooms keyed by the URL path) behind a `websockets`
server on a free port of 127.0.0.1; prints {"port": N} once listening, stops when stdin closes.
Runs in its own virtual environment (pycrdt-websocket pins pycrdt>=0.14).

usage: python pycrdt_websocket_server.py
"""

from __future__ import annotations

import json
import sys

import anyio
from pycrdt.websocket import WebsocketServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class WebsocketsChannel:
    """pycrdt's `Channel` protocol over a `websockets` server connection."""

    def __init__(self, websocket: ServerConnection) -> None:
        self._websocket = websocket
        self._path = websocket.request.path if websocket.request is not None else "/"

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> WebsocketsChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration() from None

    async def send(self, message: bytes) -> None:
        try:
            await self._websocket.send(message)
        except ConnectionClosed:
            pass

    async def recv(self) -> bytes:
        message = await self._websocket.recv()
        return message if isinstance(message, bytes) else message.encode()


async def main() -> None:
    async with WebsocketServer() as rooms:

        async def handler(websocket: ServerConnection) -> None:
            await rooms.serve(WebsocketsChannel(websocket))

        async with serve(handler, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(json.dumps({"port": port}), flush=True)
            await anyio.wrap_file(sys.stdin).read()


if __name__ == "__main__":
    anyio.run(main)
