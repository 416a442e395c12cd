"""A client of the original wiredb 0.7.1 (wire-websocket 0.7.1), async or blocking, driven by
the interop tests through JSON lines: commands on stdin, a snapshot ({"text"}) on stdout after
every change (blocking: after every command; "pull" applies what arrived). Runs in its own
virtual environment (the original pins pycrdt<0.13).

usage: python wiredb071_client.py async|sync PORT ROOM
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
from pycrdt import Doc, Text

from wire_websocket import AsyncWebSocketClient, WebSocketClient

# The original's client rejects a bare host name: it needs the scheme.
HOST = "http://127.0.0.1"


def emit(text: Text) -> None:
    print(json.dumps({"text": str(text)}), flush=True)


def apply(command: dict[str, Any], text: Text) -> bool:
    if command["op"] == "insert":
        index = command.get("index")
        text.insert(len(text) if index is None else index, command["value"])
    return bool(command["op"] != "exit")


async def run_async(port: int, room: str) -> None:
    doc: Doc = Doc()
    text = doc.get("text", type=Text)
    client = AsyncWebSocketClient(room, doc=doc, host=HOST, port=port)
    # Subscribed before anything can change the document, so no change goes unreported.
    async with doc.events() as events, client, anyio.create_task_group() as tg:

        async def report() -> None:
            async for _ in events:
                emit(text)

        tg.start_soon(report)
        emit(text)
        async for line in anyio.wrap_file(sys.stdin):
            if not apply(json.loads(line), text):
                break
            emit(text)
        # Let the last updates go out before leaving.
        await anyio.sleep(0.2)
        tg.cancel_scope.cancel()


def run_sync(port: int, room: str) -> None:
    with WebSocketClient(room, host=HOST, port=port, auto_push=True) as client:
        client.pull()
        text = client.doc.get("text", type=Text)
        emit(text)
        for line in sys.stdin:
            command = json.loads(line)
            if command["op"] == "pull":
                client.pull()
            if not apply(command, text):
                break
            emit(text)


if __name__ == "__main__":
    mode, port, room = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode == "async":
        anyio.run(run_async, port, room)
    else:
        run_sync(port, room)
