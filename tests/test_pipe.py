"""The pipe wire: clients across processes, frames of any size and content."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
from anyio import TASK_STATUS_IGNORED, Event, fail_after, to_thread
from anyio.abc import TaskStatus
from pycrdt import Map, Text

from helpers import wait_until
from wire_pipe import AsyncPipeClient, AsyncPipeServer
from wiredb import Room

pytestmark = pytest.mark.anyio

#: wire-pipe 0.7.1 ended each frame with SEPARATOR and stopped its reader on STOP.
SEPARATOR = bytes([226, 164, 131, 121, 240, 77, 100, 52])
STOP = bytes([80, 131, 218, 244, 198, 47, 146, 214])

CHILD = textwrap.dedent(
    """
    import sys
    import anyio
    from pycrdt import Text
    from wire_pipe import AsyncPipeClient

    sender, receiver, backend = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

    async def main():
        async with AsyncPipeClient("child", connection=(sender, receiver)) as client:
            text = client.doc.get("text", type=Text)
            assert "parent" in str(text), "not synchronized on entry"
            text += " child"
            print(str(text), flush=True)

    anyio.run(main, backend=backend)
    """
)


async def test_a_client_in_a_child_process(anyio_backend: str) -> None:
    async with AsyncPipeServer() as server:
        async with AsyncPipeClient("child", connection=await server.connect("child")) as parent:
            text = parent.doc.get("text", type=Text)
            text += "parent"
            connection = await server.connect("child")
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, *map(str, connection), anyio_backend],
                pass_fds=connection,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            # The child holds its end now: ours must go, or the connection would outlive it.
            for fd in connection:
                os.close(fd)
            out, err = await to_thread.run_sync(child.communicate, None, 60)
            assert child.returncode == 0, err
            assert out.strip() == "parent child"
            await wait_until(parent.doc, lambda: str(text) == "parent child")


async def test_a_5_mib_update_and_the_old_separators_cross_intact() -> None:
    big = ("wiredb pipes " * (1 << 19))[: 5 << 20]
    blob = b"x" + SEPARATOR + b"y" + STOP + SEPARATOR * 3
    async with AsyncPipeServer() as server:
        async with (
            AsyncPipeClient("big", connection=await server.connect("big")) as a,
            AsyncPipeClient("big", connection=await server.connect("big")) as b,
        ):
            a.doc.get("text", type=Text).insert(0, big)
            a.doc.get("map", type=Map)["blob"] = blob
            assert len(a.doc.get_update()) > 5 << 20
            assert SEPARATOR in a.doc.get_update()
            text, items = b.doc.get("text", type=Text), b.doc.get("map", type=Map)
            await wait_until(b.doc, lambda: "blob" in items and len(str(text)) == len(big))
            assert str(text) == big
            assert bytes(items["blob"]) == blob
            # A newcomer gets it all in its first sync.
            async with AsyncPipeClient("big", connection=await server.connect("big")) as c:
                assert str(c.doc.get("text", type=Text)) == big
                assert bytes(c.doc.get("map", type=Map)["blob"]) == blob


async def test_a_client_over_two_os_pipes() -> None:
    server_receiver, client_sender = os.pipe()
    client_receiver, server_sender = os.pipe()
    async with AsyncPipeServer() as server:
        await server.connect("pair", server_sender=server_sender, server_receiver=server_receiver)
        async with (
            AsyncPipeClient("pair", connection=(client_sender, client_receiver)) as a,
            AsyncPipeClient("pair", connection=await server.connect("pair")) as b,
        ):
            a.doc.get("text", type=Text).insert(0, "through pipes")
            text = b.doc.get("text", type=Text)
            await wait_until(b.doc, lambda: str(text) == "through pipes")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_the_four_descriptors_of_wire_pipe_0_7_1_work() -> None:
    # wire-pipe 0.7.1's client took (sender, receiver, server_sender, server_receiver): how a
    # client of `connect(id, server_sender, server_receiver)` was written.
    async def exercise() -> None:
        async with AsyncPipeServer() as server:
            client_receiver, server_sender = os.pipe()
            server_receiver, client_sender = os.pipe()
            await server.connect("four", server_sender, server_receiver)
            connection = (client_sender, client_receiver, server_sender, server_receiver)
            async with (
                AsyncPipeClient("four", connection=connection) as a,
                AsyncPipeClient("four", connection=await server.connect("four")) as b,
            ):
                a.doc.get("text", type=Text).insert(0, "four")
                text = b.doc.get("text", type=Text)
                await wait_until(b.doc, lambda: str(text) == "four")

    await exercise()  # starts what lives as long as the process
    before = open_fds()
    await exercise()
    # Each descriptor closed once, by its owner: the client its two, the server its two.
    assert open_fds() == before


def test_a_connection_of_another_length_is_refused() -> None:
    with pytest.raises(ValueError, match="server_receiver"):
        AsyncPipeClient(connection=(1, 2, 3))  # type: ignore[arg-type]


class ClosingRoom(Room):
    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        self.closed = Event()
        try:
            await super().run(task_status=task_status)
        finally:
            self.closed.set()


async def test_a_vanished_or_misbehaving_peer_ends_alone() -> None:
    async with AsyncPipeServer(ClosingRoom) as server:
        async with AsyncPipeClient("v", connection=await server.connect("v")) as a:
            room = server.room_manager.rooms["v"]
            assert isinstance(room, ClosingRoom)
            # A peer that sends a frame the room refuses, and one that just goes away.
            sender, receiver = await server.connect("v")
            os.close(receiver)
            bad = socket.socket(fileno=sender)
            with bad:
                frame = b"\x00\x02\x09\x01\x02"  # a sync update declaring 9 bytes, carrying 2
                bad.sendall(len(frame).to_bytes(4, "little") + frame)
                with fail_after(5):
                    # The server ends it: what it had queued (its sync step 1), then nothing.
                    while await to_thread.run_sync(bad.recv, 1 << 16):
                        pass
            for fd in await server.connect("v"):
                os.close(fd)
            async with AsyncPipeClient("v", connection=await server.connect("v")) as b:
                a.doc.get("text", type=Text).insert(0, "still here")
                text = b.doc.get("text", type=Text)
                await wait_until(b.doc, lambda: str(text) == "still here")
        # Neither left a member behind holding the room open.
        with fail_after(5):
            await room.closed.wait()


async def test_frames_over_the_limit_end_the_connection() -> None:
    async with AsyncPipeServer(max_message_bytes=1 << 16) as server:
        async with AsyncPipeClient("limit", connection=await server.connect("limit")) as a:
            async with AsyncPipeClient(
                "limit", connection=await server.connect("limit")
            ) as watcher:
                a.doc.get("text", type=Text).insert(0, "x" * (1 << 17))
                with fail_after(5):
                    await a._client._closed.wait()
                assert str(watcher.doc.get("text", type=Text)) == ""


async def test_a_bad_connection_raises_os_error() -> None:
    read_end, write_end = os.pipe()
    os.close(write_end)
    os.close(read_end)
    with pytest.raises(OSError):
        async with AsyncPipeClient("x", connection=read_end):
            pass


async def test_a_pipe_room_stays_up_while_clients_come_and_go() -> None:
    async with AsyncPipeServer() as server:
        async with AsyncPipeClient("keep", connection=await server.connect("keep")) as a:
            a.doc.get("text", type=Text).insert(0, "kept")
            # Once a first client got it, the room has it (a's update may still be on its way
            # when the next client syncs otherwise).
            async with AsyncPipeClient("keep", connection=await server.connect("keep")) as first:
                text = first.doc.get("text", type=Text)
                await wait_until(first.doc, lambda: str(text) == "kept")
            for _ in range(3):
                async with AsyncPipeClient(
                    "keep", connection=await server.connect("keep")
                ) as passing:
                    assert str(passing.doc.get("text", type=Text)) == "kept"
