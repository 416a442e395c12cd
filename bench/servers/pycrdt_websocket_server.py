"""pycrdt-websocket's `WebsocketServer` behind the `websockets` library, for the benchmarks.
Prints `READY <port>` once it listens; runs until killed.

    python bench/servers/pycrdt_websocket_server.py --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from pycrdt.websocket import WebsocketServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class Channel:
    """pycrdt's channel interface over a `websockets` connection."""

    def __init__(self, websocket: ServerConnection) -> None:
        self._websocket = websocket
        self._path = websocket.request.path if websocket.request else "/"

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> Channel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration() from None

    async def send(self, message: bytes) -> None:
        await self._websocket.send(message)

    async def recv(self) -> bytes:
        message = await self._websocket.recv()
        return message if isinstance(message, bytes) else message.encode()


async def main(port: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    async with WebsocketServer() as server:

        async def handler(websocket: ServerConnection) -> None:
            await server.serve(Channel(websocket))

        async with serve(handler, "127.0.0.1", port, max_size=None, compression=None):
            print(f"READY {port}", flush=True)
            await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
