"""A room that closes while its server runs releases what it holds at once: its descriptors
and its native document go when it closes, not when Python's cyclic collector happens to run
(cancelled tasks leave closed rooms in reference cycles)."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from anyio import fail_after, lowlevel
from pycrdt import Text

from helpers import wait_until
from wire_file import FileRoom, file_room_factory
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer
from wiredb import Room
from wiredb._wiredb import memory_usage

pytestmark = pytest.mark.anyio

ROOMS = 200


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def rooms_closed(server: AsyncWebSocketServer) -> None:
    with fail_after(10):
        while server.room_manager.rooms:
            # Rooms close in the room manager's own tasks: give them turns.
            await lowlevel.checkpoint()


async def visit(port: int, id: str) -> None:
    async with AsyncWebSocketClient(id, host="127.0.0.1", port=port) as client:
        await client.synchronized.wait()


@pytest.mark.parametrize("kind", ["file", "plain"])
async def test_closed_rooms_hold_no_descriptor_without_the_collector(
    kind: str, tmp_path: Path
) -> None:
    opened: list[Room] = []

    def factory(id: str) -> Room:
        room: Room = FileRoom(id, directory=tmp_path, fsync="none") if kind == "file" else Room(id)
        opened.append(room)
        return room

    make: Callable[[str], Room] = factory
    async with AsyncWebSocketServer(make, host="127.0.0.1", port=0) as server:
        # What lives as long as the process is started by a first room; the collector then
        # frees what earlier tests left, and stays off.
        await visit(server.port, "warm")
        await rooms_closed(server)
        gc.collect()
        before = open_fds()
        gc.disable()
        try:
            for i in range(ROOMS):
                await visit(server.port, f"room-{i}")
            await rooms_closed(server)
            assert open_fds() == before
        finally:
            gc.enable()
    # And each closed room let go of its native document.
    assert len(opened) == ROOMS + 1
    for room in opened:
        with pytest.raises(RuntimeError, match="is closed"):
            room._core.state()


async def test_closed_file_rooms_free_their_documents_without_the_collector(
    tmp_path: Path,
) -> None:
    # A room's document is charged to the process's memory budget until it is freed.
    factory = file_room_factory(tmp_path, fsync="none")
    async with AsyncWebSocketServer(factory, host="127.0.0.1", port=0) as server:
        await visit(server.port, "warm")
        await rooms_closed(server)
        gc.collect()
        before = memory_usage()[0]
        gc.disable()
        try:
            for i in range(20):
                async with (
                    AsyncWebSocketClient(f"doc-{i}", host="127.0.0.1", port=server.port) as a,
                    AsyncWebSocketClient(f"doc-{i}", host="127.0.0.1", port=server.port) as b,
                ):
                    a.doc.get("text", type=Text).insert(0, "x" * 100_000)
                    text = b.doc.get("text", type=Text)
                    await wait_until(b.doc, lambda: len(str(text)) == 100_000)  # noqa: B023
                    # Applied by the room (relayed to b): its document is held.
                    assert memory_usage()[0] > before
            await rooms_closed(server)
            assert memory_usage()[0] == before
        finally:
            gc.enable()
