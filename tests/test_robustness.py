"""Bad input and abrupt disconnects from one client do not disturb anyone else."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest
from anyio import to_thread
from pycrdt import Map, Text
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from helpers import wait_until
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer

pytestmark = pytest.mark.anyio


def send_and_get_close_code(port: int, room: str, frame: bytes | str) -> int | None:
    """Sends one frame on a raw WebSocket and returns the close code the server answers with."""
    with connect(f"ws://127.0.0.1:{port}/{room}", open_timeout=10) as ws:
        try:
            ws.send(frame)
            ws.send(b"\x00\x00\x01\x00")  # a valid sync step 1 after it
            while True:
                message = ws.recv(timeout=10)
                if isinstance(message, bytes) and message.startswith(b"\x00\x01"):
                    return None  # the step 1 after it was answered: still open
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


def abrupt_disconnect(port: int, room: str) -> None:
    """Completes a handshake, sends half a frame and drops the TCP connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        request = (
            f"GET /{room} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.sendall(request.encode())
        assert b"101" in sock.recv(1024)
        sock.sendall(b"\x82\xfe\x10\x00")  # a masked binary frame header announcing 4096 bytes
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


async def test_bad_frames_close_only_their_sender() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        port = server.port
        async with (
            AsyncWebSocketClient("r", host="127.0.0.1", port=port) as a,
            AsyncWebSocketClient("r", host="127.0.0.1", port=port) as b,
            AsyncWebSocketClient("other", host="127.0.0.1", port=port) as c,
        ):
            codes: dict[str, int | None] = {}
            bad: list[tuple[str, bytes | str]] = [
                ("garbage", b"\xff\xff\xff\xff"),
                ("truncated", b"\x00\x02\x50\x01"),
                ("bad update", b"\x00\x02\x03\x01\x02\x03"),
                ("bad state vector", b"\x00\x00\x05\x80\x80\x80\x80\x01"),
                # Ignored, not fatal: empty frames, text frames, unknown message types.
                ("empty", b""),
                ("text", "hello"),
                ("unknown type", b"\x09\x01"),
            ]
            for name, frame in bad:
                codes[name] = await to_thread.run_sync(send_and_get_close_code, port, "r", frame)
            await to_thread.run_sync(abrupt_disconnect, port, "r")
            await to_thread.run_sync(abrupt_disconnect, port, "other")

            assert codes == {
                "garbage": 1002,
                "truncated": 1002,
                "bad update": 1007,
                "bad state vector": 1007,
                "empty": None,
                "text": None,
                "unknown type": None,
            }
            a.doc.get("text", type=Text).insert(0, "still fine")
            c.doc.get("text", type=Text).insert(0, "here too")
            text_b = b.doc.get("text", type=Text)
            await wait_until(b.doc, lambda: str(text_b) == "still fine")
            async with AsyncWebSocketClient("r", host="127.0.0.1", port=port) as late:
                assert str(late.doc.get("text", type=Text)) == "still fine"
            async with AsyncWebSocketClient("other", host="127.0.0.1", port=port) as late:
                assert str(late.doc.get("text", type=Text)) == "here too"


EXCHANGE = textwrap.dedent(
    """
    import sys
    from pycrdt import Map
    from wire_websocket import WebSocketClient

    port, n = int(sys.argv[1]), int(sys.argv[2])
    with (
        WebSocketClient("np", host="127.0.0.1", port=port, auto_push=True) as a,
        WebSocketClient("np", host="127.0.0.1", port=port, auto_push=True) as b,
    ):
        a.pull()
        b.pull()
        for i in range(n):
            a.doc.get("a", type=Map)[str(i)] = i
            b.doc.get("b", type=Map)[str(i)] = i
        while len(a.doc.get("b", type=Map)) < n or len(b.doc.get("a", type=Map)) < n:
            for client in (a, b):
                client.wait(0.05)
    print("converged")
    """
)


async def test_a_plain_room_runs_no_python_per_update() -> None:
    """Two clients (in another process) exchange 400 updates through a default room while this
    process's event loop, the only place its Python runs, is blocked."""
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        # The room is opened (the one Python call a room costs) by a client that stays.
        async with AsyncWebSocketClient("np", host="127.0.0.1", port=server.port) as holder:
            result = subprocess.run(  # blocks the event loop on purpose
                [sys.executable, "-c", EXCHANGE, str(server.port), "200"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip() == "converged"
            b_map = holder.doc.get("b", type=Map)
            await wait_until(holder.doc, lambda: len(b_map) == 200)
