"""Custom wires: documents synced over channels written in Python."""

from __future__ import annotations

from typing import Any

import pytest
from anyio import (
    TASK_STATUS_IGNORED,
    Event,
    create_memory_object_stream,
    create_task_group,
    fail_after,
    to_thread,
)
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pycrdt import Text
from websockets.sync.client import ClientConnection, connect

from helpers import wait_until
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer
from wiredb import AsyncChannel, AsyncClient, Channel, Client, Room

pytestmark = pytest.mark.anyio


class StreamChannel(AsyncChannel):
    """One end of a pair of anyio memory object streams."""

    def __init__(
        self,
        id: str,
        send: MemoryObjectSendStream[bytes],
        receive: MemoryObjectReceiveStream[bytes],
    ) -> None:
        self._id, self._send, self._receive = id, send, receive
        self.sent = 0

    @property
    def id(self) -> str:
        return self._id

    async def send(self, message: bytes) -> None:
        self.sent += 1
        await self._send.send(message)

    async def receive(self) -> bytes:
        try:
            return await self._receive.receive()
        except Exception:
            raise StopAsyncIteration() from None

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def channel_pair(id: str) -> tuple[StreamChannel, StreamChannel]:
    a_send, b_receive = create_memory_object_stream[bytes](16)
    b_send, a_receive = create_memory_object_stream[bytes](16)
    return StreamChannel(id, a_send, a_receive), StreamChannel(id, b_send, b_receive)


async def test_a_custom_channel_joins_a_room_next_to_websocket_clients() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        async with AsyncWebSocketClient("mix", host="127.0.0.1", port=server.port) as ws:
            room = server.room_manager.rooms["mix"]
            server_end, client_end = channel_pair("mix")
            async with create_task_group() as tg:
                await tg.start(room.serve, server_end)
                async with AsyncClient(client_end) as custom:
                    custom.doc.get("text", type=Text).insert(0, "custom ")
                    ws.doc.get("text", type=Text).insert(0, "ws ")
                    text_ws = ws.doc.get("text", type=Text)
                    text_custom = custom.doc.get("text", type=Text)
                    await wait_until(ws.doc, lambda: len(str(text_ws)) == 10)
                    await wait_until(custom.doc, lambda: str(text_custom) == str(text_ws))
                await client_end.aclose()
            await server_end.aclose()


class ClosingRoom(Room):
    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        self.closed = Event()
        try:
            await super().run(task_status=task_status)
        finally:
            self.closed.set()


async def test_a_served_channel_holds_its_room_open_like_any_client() -> None:
    async with AsyncWebSocketServer(ClosingRoom, host="127.0.0.1", port=0) as server:
        server_end, client_end = channel_pair("hold")
        async with create_task_group() as tg:
            async with AsyncWebSocketClient("hold", host="127.0.0.1", port=server.port):
                opened = server.room_manager.rooms["hold"]
                assert isinstance(opened, ClosingRoom)
                room: ClosingRoom = opened
                await tg.start(room.serve, server_end)
            # The WebSocket client left; the channel still holds the room.
            async with AsyncClient(client_end) as custom:
                custom.doc.get("text", type=Text).insert(0, "kept")
                async with AsyncWebSocketClient(
                    "hold", host="127.0.0.1", port=server.port
                ) as later:
                    assert server.room_manager.rooms["hold"] is room
                    text = later.doc.get("text", type=Text)
                    await wait_until(later.doc, lambda: str(text) == "kept")
                assert not room.closed.is_set()
            await client_end.aclose()
        await server_end.aclose()
        # The channel ended: it was the room's last client.
        with fail_after(5):
            await room.closed.wait()


class WebsocketsChannel(Channel):
    """A blocking channel over the `websockets` library's client."""

    def __init__(self, connection: ClientConnection, id: str) -> None:
        self._connection, self._id = connection, id

    @property
    def id(self) -> str:
        return self._id

    def send(self, message: bytes) -> None:
        self._connection.send(message)

    def receive(self, timeout: float | None = None) -> bytes:
        message: Any = self._connection.recv(timeout=timeout)
        return bytes(message)


def blocking_edit(port: int, word: str, room: str = "third-party") -> str:
    """Adds `word` through a blocking `Client` over a `websockets` channel to `room`, and
    returns the text once it holds what an async client wrote ("async")."""
    with connect(f"ws://127.0.0.1:{port}/{room}") as connection:
        with Client(WebsocketsChannel(connection, room), auto_push=True) as client:
            client.pull()
            text = client.doc.get("text", type=Text)
            text += word
            while "async" not in str(text):
                assert client.wait(10)
            return str(text)


async def test_a_blocking_client_over_a_third_party_websocket_library() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        async with AsyncWebSocketClient("third-party", host="127.0.0.1", port=server.port) as ws:
            ws.doc.get("text", type=Text).insert(0, "async ")
            seen = await to_thread.run_sync(blocking_edit, server.port, "blocking")
            assert sorted(seen.split()) == ["async", "blocking"]
            text = ws.doc.get("text", type=Text)
            await wait_until(ws.doc, lambda: str(text) == seen)


class RawStreamChannel(StreamChannel):
    """A stream channel that lets anyio's errors out as they are (`EndOfStream`,
    `BrokenResourceError`...), as a user's channel may."""

    async def receive(self) -> bytes:
        return await self._receive.receive()


@pytest.mark.parametrize("vanishing", ["receiving", "sending", "both"])
async def test_a_vanished_channel_peer_ends_only_its_member(
    vanishing: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The peer of the served end stops receiving (the room's sends break), stops sending (the
    # served end's receive raises `EndOfStream`), or both.
    caplog.set_level("INFO", logger="wiredb")
    to_peer, peer_receive = create_memory_object_stream[bytes](16)
    peer_send, from_peer = create_memory_object_stream[bytes](16)
    served_end = RawStreamChannel("vanish", to_peer, from_peer)
    served = Event()
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        async with (
            AsyncWebSocketClient("vanish", host="127.0.0.1", port=server.port) as editor,
            AsyncWebSocketClient("vanish", host="127.0.0.1", port=server.port) as watcher,
        ):
            room = server.room_manager.rooms["vanish"]

            async def serve() -> None:
                await room.serve(served_end)
                served.set()

            # An error out of `serve()` would end this task group with it.
            async with create_task_group() as tg:
                tg.start_soon(serve)
                # The peer asks for the document (sync step 1, empty state vector): from its
                # answer on, the member is sent every update.
                await peer_send.send(b"\x00\x00\x01\x00")
                with fail_after(10):
                    assert await peer_receive.receive()  # the room's sync step 1
                if vanishing in ("receiving", "both"):
                    await peer_receive.aclose()
                if vanishing in ("sending", "both"):
                    await peer_send.aclose()
                edited = editor.doc.get("text", type=Text)
                watched = watcher.doc.get("text", type=Text)

                def caught_up() -> bool:
                    return str(watched) == str(edited)

                with fail_after(10):
                    while not served.is_set():
                        # Each edit goes to the vanished member too, until it is gone.
                        edited += "x"
                        await wait_until(watcher.doc, caught_up)
            logged = [r.getMessage() for r in caplog.records]
            assert any("'vanish'" in m and "ended" in m for m in logged), logged
            # The room goes on for the others, and for a newcomer.
            edited += "after"
            await wait_until(watcher.doc, caught_up)
            async with AsyncWebSocketClient(
                "vanish", host="127.0.0.1", port=server.port
            ) as newcomer:
                text = newcomer.doc.get("text", type=Text)
                await wait_until(newcomer.doc, lambda: str(text) == str(edited))
    await served_end.aclose()
    await peer_send.aclose()
    await peer_receive.aclose()
