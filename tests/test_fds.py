"""Closing a client or a server of any wire releases every descriptor it opened."""

from __future__ import annotations

import gc
import os
from collections.abc import Awaitable, Callable

import pytest
from anyio import create_memory_object_stream, create_task_group
from pycrdt import Text

from helpers import wait_until
from test_channels import StreamChannel
from wire_memory import AsyncMemoryClient, AsyncMemoryServer
from wire_pipe import AsyncPipeClient, AsyncPipeServer
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer
from wiredb import AsyncClient, AsyncClientMixin

pytestmark = pytest.mark.anyio


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def converge(a: AsyncClientMixin | AsyncClient, b: AsyncClientMixin | AsyncClient) -> None:
    a.doc.get("text", type=Text).insert(0, "hello")
    text = b.doc.get("text", type=Text)
    await wait_until(b.doc, lambda: str(text) == "hello")


async def memory() -> None:
    async with AsyncMemoryServer() as server:
        async with (
            AsyncMemoryClient("f", server=server) as a,
            AsyncMemoryClient("f", server=server) as b,
        ):
            await converge(a, b)
            await server.room_manager.get_room("asked-for")


async def pipe() -> None:
    server_receiver, client_sender = os.pipe()
    client_receiver, server_sender = os.pipe()
    async with AsyncPipeServer() as server:
        await server.connect("f", server_sender=server_sender, server_receiver=server_receiver)
        async with (
            AsyncPipeClient("f", connection=(client_sender, client_receiver)) as a,
            AsyncPipeClient("f", connection=await server.connect("f")) as b,
        ):
            await converge(a, b)
            # A connection nobody uses is closed by the server when it stops.
            unused = await server.connect("f")
    os.close(unused)


async def websocket() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        async with (
            AsyncWebSocketClient("f", host="127.0.0.1", port=server.port) as a,
            AsyncWebSocketClient("f", host="127.0.0.1", port=server.port) as b,
        ):
            await converge(a, b)


async def custom_channel() -> None:
    async with AsyncMemoryServer() as server:
        async with AsyncMemoryClient("f", server=server) as a:
            room = await server.room_manager.get_room("f")
            a_send, b_receive = create_memory_object_stream[bytes](16)
            b_send, a_receive = create_memory_object_stream[bytes](16)
            server_end = StreamChannel("f", a_send, a_receive)
            client_end = StreamChannel("f", b_send, b_receive)
            async with create_task_group() as tg:
                await tg.start(room.serve, server_end)
                async with AsyncClient(client_end) as b:
                    await converge(a, b)
                await client_end.aclose()
            await server_end.aclose()


@pytest.mark.parametrize("exercise", [memory, pipe, websocket, custom_channel])
async def test_closing_releases_every_descriptor(exercise: Callable[[], Awaitable[None]]) -> None:
    # The first run starts what lives as long as the process (the runtime's threads and fds);
    # the collector then frees what earlier tests left in reference cycles, and stays off: a
    # descriptor that only the collector would free counts as left open.
    await exercise()
    gc.collect()
    before = open_fds()
    gc.disable()
    try:
        for _ in range(3):
            await exercise()
        assert open_fds() == before
    finally:
        gc.enable()
