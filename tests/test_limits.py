"""Server limits: idle connections, connection cap, document quota, message size."""

from __future__ import annotations

import socket

import pytest
from anyio import fail_after, sleep, to_thread
from pycrdt import Text
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from helpers import wait_until
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer

pytestmark = pytest.mark.anyio

HANDSHAKE = (
    "GET /{room} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def silent_client_lifetime(port: int) -> bytes:
    """Upgrades, then never answers anything; returns all the server sent until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(HANDSHAKE.format(room="idle").encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


async def test_a_silent_connection_is_pinged_then_closed() -> None:
    async with AsyncWebSocketServer(
        host="127.0.0.1", port=0, ping_interval=0.05, idle_timeout=0.2
    ) as server:
        received = await to_thread.run_sync(silent_client_lifetime, server.port)
        body = received.split(b"\r\n\r\n", 1)[1]
        assert b"\x89\x00" in body  # a ping frame
        assert b"\x88" in body  # then a close frame


async def test_a_client_answering_pings_stays_connected() -> None:
    async with AsyncWebSocketServer(
        host="127.0.0.1", port=0, ping_interval=0.05, idle_timeout=0.2
    ) as server:
        async with (
            AsyncWebSocketClient("alive", host="127.0.0.1", port=server.port) as a,
            AsyncWebSocketClient("alive", host="127.0.0.1", port=server.port) as b,
        ):
            # Idle for three idle timeouts: only the pongs keep the connections open.
            await sleep(0.6)
            a.doc.get("text", type=Text).insert(0, "still here")
            text = b.doc.get("text", type=Text)
            await wait_until(b.doc, lambda: str(text) == "still here")


def try_connect(port: int, timeout: float) -> bool:
    try:
        with connect(f"ws://127.0.0.1:{port}/capped", open_timeout=timeout):
            return True
    except TimeoutError:
        return False


async def test_connections_beyond_the_cap_wait_for_a_free_slot() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0, max_connections=2) as server:
        async with AsyncWebSocketClient("capped", host="127.0.0.1", port=server.port):
            async with AsyncWebSocketClient("capped", host="127.0.0.1", port=server.port):
                assert not await to_thread.run_sync(try_connect, server.port, 0.5)
            with fail_after(10):
                assert await to_thread.run_sync(try_connect, server.port, 5.0)


def send_big_update(port: int, size: int) -> int | None:
    from pycrdt import Doc

    doc: Doc[Text] = Doc()
    doc.get("text", type=Text).insert(0, "x" * size)
    update = doc.get_update()
    frame = bytes([0, 2]) + encode_varuint(len(update)) + update
    with connect(f"ws://127.0.0.1:{port}/quota", max_size=None) as ws:
        try:
            ws.send(frame)
            while True:
                ws.recv(timeout=10)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


def encode_varuint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


async def test_the_document_quota_and_message_size_close_only_the_sender() -> None:
    async with AsyncWebSocketServer(
        host="127.0.0.1", port=0, max_document_bytes=10_000, max_message_bytes=50_000
    ) as server:
        async with (
            AsyncWebSocketClient("quota", host="127.0.0.1", port=server.port) as a,
            AsyncWebSocketClient("quota", host="127.0.0.1", port=server.port) as b,
        ):
            assert await to_thread.run_sync(send_big_update, server.port, 20_000) == 1009
            assert await to_thread.run_sync(send_big_update, server.port, 100_000) == 1009
            a.doc.get("text", type=Text).insert(0, "small edits fit")
            text = b.doc.get("text", type=Text)
            await wait_until(b.doc, lambda: str(text) == "small edits fit")
