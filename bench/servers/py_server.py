"""A y-websocket server for the benchmarks: `wire_websocket.AsyncWebSocketServer`, which is
wiredb's own (native) server or the original wiredb 0.7.1's, whichever the interpreter running
this script has installed. Prints `READY <port>` once it listens; runs until killed.

    python bench/servers/py_server.py --port 8000 [--doc]

`--doc` serves rooms whose `Room.doc` is in use (the original's rooms always are).
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

import anyio

from wire_websocket import AsyncWebSocketServer
from wiredb import Room


class DocRoom(Room):
    """A room whose document is kept in Python (touched once, so it is mirrored)."""

    async def run(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.doc  # noqa: B018
        await super().run(*args, **kwargs)


def wait_listening(port: int) -> None:
    # The original starts listening in a background task: wait until it accepts.
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def main(port: int, doc: bool) -> None:
    factory = DocRoom if doc else Room
    async with AsyncWebSocketServer(factory, host="127.0.0.1", port=port):
        await anyio.to_thread.run_sync(wait_listening, port)
        print(f"READY {port}", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--doc", action="store_true")
    args = parser.parse_args()
    try:
        anyio.run(main, args.port, args.doc)
    except KeyboardInterrupt:
        sys.exit(0)
