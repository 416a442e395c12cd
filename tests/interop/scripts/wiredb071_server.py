"""The original wiredb 0.7.1 WebSocket server (wire-websocket 0.7.1, on anycorn) on a free port
of 127.0.0.1; prints {"port": N} once it accepts connections, stops when stdin closes. Runs in
its own virtual environment (the original pins pycrdt<0.13).

usage: python wiredb071_server.py
"""

from __future__ import annotations

import json
import socket
import sys

import anyio

from wire_websocket import AsyncWebSocketServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def main() -> None:
    port = free_port()
    async with AsyncWebSocketServer(host="127.0.0.1", port=port):
        with anyio.fail_after(20):
            while True:
                try:
                    stream = await anyio.connect_tcp("127.0.0.1", port)
                except OSError:
                    await anyio.sleep(0.05)
                else:
                    await stream.aclose()
                    break
        print(json.dumps({"port": port}), flush=True)
        await anyio.wrap_file(sys.stdin).read()


if __name__ == "__main__":
    anyio.run(main)
