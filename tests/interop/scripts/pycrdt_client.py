"""A pycrdt `Provider` (pycrdt's own sync client) over a `websockets` connection, driven by the
interop tests through JSON lines: commands on stdin, a snapshot ({"text", "synced"}) on stdout
after every change. Runs with the pycrdt under test (the test suite's own environment).

usage: python pycrdt_client.py SERVER_URL ROOM
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
from pycrdt import Doc, Provider, Text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


class WebsocketsChannel:
    """pycrdt's `Channel` protocol over a `websockets` connection."""

    def __init__(self, websocket: ClientConnection, path: str) -> None:
        self._websocket = websocket
        self._path = path

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
        await self._websocket.send(message)

    async def recv(self) -> bytes:
        message = await self._websocket.recv()
        return message if isinstance(message, bytes) else message.encode()


async def main(server_url: str, room: str) -> None:
    doc: Doc[Any] = Doc()
    text = doc.get("text", type=Text)
    synced = False

    def emit() -> None:
        print(json.dumps({"text": str(text), "synced": synced}), flush=True)

    # Subscribed before anything can change the document, so no change goes unreported.
    async with doc.events() as events, connect(f"{server_url}/{room}") as websocket:
        channel = WebsocketsChannel(websocket, room)
        async with Provider(doc, channel), anyio.create_task_group() as tg:

            async def report() -> None:
                async for _ in events:
                    emit()

            tg.start_soon(report)
            emit()
            async for line in anyio.wrap_file(sys.stdin):
                command = json.loads(line)
                if command["op"] == "insert":
                    index = command.get("index")
                    text.insert(len(text) if index is None else index, command["value"])
                elif command["op"] == "exit":
                    break
                emit()
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:3])
