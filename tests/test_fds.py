"""Closing a client or a server of any wire releases every descriptor and task it opened."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Awaitable, Callable

import pytest
import sniffio
from anyio import Event, create_memory_object_stream, create_task_group, sleep_forever, to_thread
from pycrdt import Text

from helpers import wait_until
from test_channels import StreamChannel, channel_pair
from test_channels import blocking_edit as channel_edit
from wire_memory import AsyncMemoryClient, AsyncMemoryServer
from wire_pipe import AsyncPipeClient, AsyncPipeServer
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer, WebSocketClient
from wiredb import AsyncClient, AsyncClientMixin

pytestmark = pytest.mark.anyio


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def running_tasks() -> int:
    """The tasks alive in the event loop: all of asyncio's, or every task under trio's root
    task (its nurseries' children, recursively)."""
    if sniffio.current_async_library() == "asyncio":
        return len(asyncio.all_tasks())
    import trio

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(child) for n in task.child_nurseries for child in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return count(root)


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
    for fd in unused:
        os.close(fd)


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


def blocking_edit(port: int, word: str) -> None:
    with WebSocketClient("f", host="127.0.0.1", port=port) as client:
        client.pull()
        text = client.doc.get("text", type=Text)
        text += word
        client.push()
        while "async" not in str(text):
            assert client.wait(10)


async def blocking_clients() -> None:
    """The blocking `WebSocketClient`, and a blocking `Client` over a user's `Channel`."""
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        async with AsyncWebSocketClient("f", host="127.0.0.1", port=server.port) as a:
            text = a.doc.get("text", type=Text)
            text += "async "
            await to_thread.run_sync(blocking_edit, server.port, "blocking ")
            await to_thread.run_sync(channel_edit, server.port, "channel", "f")
            await wait_until(a.doc, lambda: "blocking" in str(text) and "channel" in str(text))


EXERCISES = [memory, pipe, websocket, custom_channel, blocking_clients]


@pytest.mark.parametrize("exercise", EXERCISES)
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


@pytest.mark.parametrize("exercise", EXERCISES)
async def test_closing_releases_every_task(exercise: Callable[[], Awaitable[None]]) -> None:
    before = running_tasks()
    for _ in range(3):
        await exercise()
        assert running_tasks() == before


async def test_running_tasks_sees_nested_tasks() -> None:
    # What the check above relies on: a task left in a nested task group is counted.
    before = running_tasks()
    started = Event()
    async with create_task_group() as outer:

        async def nested() -> None:
            async with create_task_group() as inner:
                inner.start_soon(sleep_forever)
                started.set()

        outer.start_soon(nested)
        await started.wait()
        assert running_tasks() >= before + 2
        outer.cancel_scope.cancel()
    assert running_tasks() == before


async def reaches(a: AsyncClientMixin | AsyncClient, b: AsyncClientMixin, word: str) -> None:
    a.doc.get("text", type=Text).insert(0, word)
    text = b.doc.get("text", type=Text)
    await wait_until(b.doc, lambda: word in str(text))


async def test_closing_a_client_releases_its_tasks_while_the_server_runs() -> None:
    # The servers and their rooms stay up (a client of each stays) while clients of each wire
    # come and go.
    async with (
        AsyncMemoryServer() as memory_server,
        AsyncPipeServer() as pipe_server,
        AsyncWebSocketServer(host="127.0.0.1", port=0) as ws_server,
        AsyncMemoryClient("f", server=memory_server) as memory_stayer,
        AsyncPipeClient("f", connection=await pipe_server.connect("f")) as pipe_stayer,
        AsyncWebSocketClient("f", host="127.0.0.1", port=ws_server.port) as ws_stayer,
    ):
        room = ws_server.room_manager.rooms["f"]
        before = running_tasks()
        for i in range(3):
            async with AsyncMemoryClient("f", server=memory_server) as a:
                await reaches(a, memory_stayer, f"memory{i}")
            async with AsyncPipeClient("f", connection=await pipe_server.connect("f")) as a:
                await reaches(a, pipe_stayer, f"pipe{i}")
            async with AsyncWebSocketClient("f", host="127.0.0.1", port=ws_server.port) as a:
                await reaches(a, ws_stayer, f"websocket{i}")
            server_end, client_end = channel_pair("f")
            async with create_task_group() as tg:
                await tg.start(room.serve, server_end)
                async with AsyncClient(client_end) as b:
                    await reaches(b, ws_stayer, f"channel{i}")
                await client_end.aclose()
            await server_end.aclose()
            assert running_tasks() == before
