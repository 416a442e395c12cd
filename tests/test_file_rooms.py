"""Persistent rooms: the documented seed pattern (`AsyncFileClient` on `Room.doc`) and the
native path (`FileRoom`, no Python per update)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from anyio import TASK_STATUS_IGNORED, fail_after, sleep, sleep_forever
from anyio.abc import TaskStatus
from pycrdt import Doc, Map, Text

from steady_stream import check_bounded, part, stream
from update_files import encode_file, load_doc, read_records, text_in, text_updates
from wire_file import (
    AsyncFileClient,
    FileRoom,
    file_room_factory,
    room_file_name,
    room_id_from_file_name,
)
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer
from wiredb import Room

pytestmark = pytest.mark.anyio


def seed_room_factory(directory: Path) -> Callable[[str], Room]:
    """The documented pattern, as a user writes it."""

    class SeedRoom(Room):
        async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
            await self.task_group.start(self.persist)
            await super().run(task_status=task_status)

        async def persist(self, *, task_status: TaskStatus[None]) -> None:
            async with AsyncFileClient(doc=self.doc, path=f"{directory}/{self.id}_updates.y"):
                task_status.started()
                await sleep_forever()

    return SeedRoom


def native_room_factory(directory: Path) -> Callable[[str], Room]:
    return file_room_factory(directory)


FACTORIES = {"seed": seed_room_factory, "native": native_room_factory}


@pytest.fixture(params=sorted(FACTORIES))
def factory(request: pytest.FixtureRequest) -> Callable[[Path], Callable[[str], Room]]:
    return FACTORIES[request.param]


async def test_joining_clients_get_the_file_in_their_first_sync(
    tmp_path: Path, factory: Callable[[Path], Callable[[str], Room]]
) -> None:
    (tmp_path / "my_id_updates.y").write_bytes(encode_file(text_updates(["stored", " text"])))
    async with AsyncWebSocketServer(factory(tmp_path), host="127.0.0.1", port=0) as server:
        async with AsyncWebSocketClient("my_id", host="127.0.0.1", port=server.port) as client:
            # Synchronized on entry: no waiting for a later update.
            assert str(client.doc.get("text", type=Text)) == "stored text"


async def test_a_restarted_server_serves_what_the_last_one_stored(
    tmp_path: Path, factory: Callable[[Path], Callable[[str], Room]]
) -> None:
    async with AsyncWebSocketServer(factory(tmp_path), host="127.0.0.1", port=0) as server:
        async with AsyncWebSocketClient("r", host="127.0.0.1", port=server.port) as client:
            client.doc.get("text", type=Text).insert(0, "persisted")
            client.doc.get("map", type=Map)["n"] = 1
            await wait_for_file(tmp_path / "r_updates.y", lambda p: "persisted" in text_in(p))
            client.doc.get("map", type=Map)["n"] = 2  # made just before the server stops
    async with AsyncWebSocketServer(factory(tmp_path), host="127.0.0.1", port=0) as server:
        async with AsyncWebSocketClient("r", host="127.0.0.1", port=server.port) as client:
            assert str(client.doc.get("text", type=Text)) == "persisted"
            assert client.doc.get("map", type=Map)["n"] == 2


async def test_a_room_flushes_when_its_last_client_leaves(tmp_path: Path) -> None:
    async with AsyncWebSocketServer(
        file_room_factory(tmp_path, write_delay=3600), host="127.0.0.1", port=0
    ) as server:
        async with AsyncWebSocketClient("r", host="127.0.0.1", port=server.port) as client:
            client.doc.get("text", type=Text).insert(0, "flushed on close")
        with fail_after(10):
            while "r" in server.room_manager.rooms:
                await sleep(0.005)
        # Closed with the server still running: the pending write was done before it closed.
        assert text_in(tmp_path / "r_updates.y") == "flushed on close"
        async with AsyncWebSocketClient("r", host="127.0.0.1", port=server.port) as client:
            assert str(client.doc.get("text", type=Text)) == "flushed on close"


async def test_a_file_rooms_write_delay_is_bounded_for_a_steady_stream(tmp_path: Path) -> None:
    """A client's edit every 20 ms for about 1.5 s, into a `FileRoom` with `write_delay=0.2`:
    the room's file fills while the stream goes on."""
    path = tmp_path / "s_updates.y"
    async with AsyncWebSocketServer(
        file_room_factory(tmp_path, write_delay=0.2), host="127.0.0.1", port=0
    ) as server:
        async with AsyncWebSocketClient("s", host="127.0.0.1", port=server.port) as client:
            seen = await stream(client.doc.get("text", type=Text), path)
    check_bounded(seen)
    assert text_in(path) == "".join(part(i) for i in range(seen.edits))


async def test_a_squashing_file_room_keeps_one_record(tmp_path: Path) -> None:
    path = tmp_path / "sq_updates.y"
    path.write_bytes(encode_file(text_updates(["a", "b", "c"])))
    async with AsyncWebSocketServer(
        file_room_factory(tmp_path, squash=True), host="127.0.0.1", port=0
    ) as server:
        async with AsyncWebSocketClient("sq", host="127.0.0.1", port=server.port) as client:
            assert len(read_records(path)) == 1, "compacted on open"
            text = client.doc.get("text", type=Text)
            for part in "def":
                text += part
            await wait_for_file(path, lambda p: text_in(p) == "abcdef")
            assert len(read_records(path)) == 1
    assert len(read_records(path)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["sq_updates.y"]


async def test_the_seed_pattern_and_the_native_path_store_the_same_document(
    tmp_path: Path,
) -> None:
    seed_dir, native_dir = tmp_path / "seed", tmp_path / "native"
    seed_dir.mkdir()
    async with (
        AsyncWebSocketServer(seed_room_factory(seed_dir), host="127.0.0.1", port=0) as seed,
        AsyncWebSocketServer(file_room_factory(native_dir), host="127.0.0.1", port=0) as native,
    ):
        for port, done in ((seed.port, seed_dir), (native.port, native_dir)):
            doc: Doc[Any] = Doc(client_id=4242)
            async with AsyncWebSocketClient("same", doc=doc, host="127.0.0.1", port=port):
                text = doc.get("text", type=Text)
                for i in range(20):
                    text += f"{i},"
                    if i % 5 == 0:
                        await sleep(0)
                del text[0:3]
                doc.get("map", type=Map)["k"] = {"nested": [1, 2]}
                await wait_for_file(
                    done / "same_updates.y",
                    lambda p: "k" in load_doc(p).get("map", type=Map),
                )
    seed_doc = load_doc(seed_dir / "same_updates.y")
    native_doc = load_doc(native_dir / "same_updates.y")
    assert seed_doc.get_state() == native_doc.get_state()
    for doc in (seed_doc, native_doc):
        assert str(doc.get("text", type=Text)) == "".join(f"{i}," for i in range(20))[3:]
        assert doc.get("map", type=Map).to_py() == {"k": {"nested": [1.0, 2.0]}}


async def test_room_ids_never_name_a_file_outside_the_directory(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    ids = ["../escape", "..", ".", "a/b", "/abs", "nul\x00byte", "100%", "é", ".hidden"]
    async with AsyncWebSocketServer(file_room_factory(directory), host="127.0.0.1", port=0) as s:
        for id in ids:
            async with AsyncWebSocketClient(id, host="127.0.0.1", port=s.port) as client:
                client.doc.get("text", type=Text).insert(0, id)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "nothing outside"
    files = sorted(directory.iterdir())
    assert len(files) == len(ids)
    stored = {room_id_from_file_name(p.name): text_in(p) for p in files}
    assert stored == {id: id for id in ids}
    for p in files:
        assert not p.name.startswith(".") and "\x00" not in p.name
    assert room_file_name("notes") == "notes_updates.y"
    assert room_file_name("../x") == "%2E.%2Fx_updates.y"
    assert FileRoom("../../x", directory=directory).path.parent == directory
    with pytest.raises(ValueError, match="too long"):
        room_file_name("x" * 300)


async def test_a_room_whose_file_cannot_be_loaded_refuses_its_clients(tmp_path: Path) -> None:
    (tmp_path / "bad_updates.y").write_bytes(b"9.9.9\x00")
    async with AsyncWebSocketServer(file_room_factory(tmp_path), host="127.0.0.1", port=0) as s:
        with pytest.raises(ConnectionError):
            async with AsyncWebSocketClient("bad", host="127.0.0.1", port=s.port):
                pass  # pragma: no cover
        async with AsyncWebSocketClient("good", host="127.0.0.1", port=s.port) as client:
            client.doc.get("text", type=Text).insert(0, "fine")
    assert (tmp_path / "bad_updates.y").read_bytes() == b"9.9.9\x00"
    assert text_in(tmp_path / "good_updates.y") == "fine"


EXCHANGE = textwrap.dedent(
    """
    import sys
    from pycrdt import Map
    from wire_websocket import WebSocketClient

    port, n = int(sys.argv[1]), int(sys.argv[2])
    with WebSocketClient("np", host="127.0.0.1", port=port, auto_push=True) as client:
        client.pull()
        items = client.doc.get("items", type=Map)
        for i in range(n):
            items[f"k{i}"] = i
    """
)


async def test_a_native_file_room_runs_no_python_per_update(tmp_path: Path) -> None:
    """Another process sends 300 updates while this process's event loop, the only place its
    Python runs, is blocked: they reach the file all the same."""
    path = tmp_path / "np_updates.y"
    async with AsyncWebSocketServer(file_room_factory(tmp_path), host="127.0.0.1", port=0) as s:
        async with AsyncWebSocketClient("np", host="127.0.0.1", port=s.port):
            # From here on the event loop is blocked on purpose (no await until the end).
            result = subprocess.run(
                [sys.executable, "-c", EXCHANGE, str(s.port), "300"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 0, result.stderr
            deadline = time.monotonic() + 10
            while len(load_doc(path).get("items", type=Map)) < 300:
                assert time.monotonic() < deadline, "the updates did not reach the file"
                time.sleep(0.005)


async def wait_for_file(path: Path, predicate: Callable[[Path], bool], timeout: float = 10) -> None:
    """Waits until `predicate(path)` holds (the file is written by another thread and has no
    event to wait on, so it is re-read until then)."""
    with fail_after(timeout):
        while not (path.exists() and predicate(path)):
            await sleep(0.005)
