"""Room files under attack: a room never touches another room's file, every id a server accepts
is stored (squashed, repaired) or refused at join with the limit named, a room that is never
edited costs no file and no thread, and a squash compacts as the original does."""

from __future__ import annotations

import errno
import gc
import logging
import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import fail_after, sleep
from pycrdt import Doc, Text, merge_updates

from helpers import wait_until
from update_files import checked_update, encode_file, read_records, text_in
from wire_file import AsyncFileClient, file_room_factory, room_file_name
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer

pytestmark = pytest.mark.anyio

#: Above Linux's largest pid (pid_max is at most 2^22): no live process has it.
DEAD_PID = 2**31 - 1
#: The runtime's bound on blocking threads (`wiredb_core::runtime::MAX_BLOCKING_THREADS`).
MAX_BLOCKING_THREADS = 16


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def stored(server: AsyncWebSocketServer, id: str, expected: str) -> None:
    """Returns once room `id` holds `expected` (as a second client of it sees) and the server
    flushed it to disk."""
    async with AsyncWebSocketClient(id, host="127.0.0.1", port=server.port) as reader:
        text = reader.doc.get("text", type=Text)
        await wait_until(reader.doc, lambda: str(text) == expected)
    await server.room_manager.flush()


async def wait_rooms_closed(server: AsyncWebSocketServer) -> None:
    """Rooms close after their last client left, on the server's own time: polled."""
    with fail_after(30):
        while server.room_manager.rooms:
            await sleep(0.01)


@pytest.mark.parametrize("squash", [False, True])
async def test_opening_a_room_never_removes_another_rooms_file(
    tmp_path: Path, squash: bool
) -> None:
    """0.8.0's cleanup of a killed squash's temporary files, run by every open of room
    `notes`, removed `notes_updates.y.tmp-<dead pid>-...`: the file of room
    `notes_updates.y.tmp-2147483647-0`, even while that room was open."""
    victims = [f"notes_updates.y.tmp-{DEAD_PID}-0", f"notes_updates.y.tmp-{DEAD_PID}-1-x"]
    factory = file_room_factory(tmp_path, squash=squash, fsync="always")
    async with AsyncWebSocketServer(factory, host="127.0.0.1", port=0) as server:
        port = server.port
        async with AsyncWebSocketClient(victims[0], host="127.0.0.1", port=port) as open_victim:
            open_victim.doc.get("text", type=Text).insert(0, "kept")
            await stored(server, victims[0], "kept")
            async with AsyncWebSocketClient(victims[1], host="127.0.0.1", port=port) as other:
                other.doc.get("text", type=Text).insert(0, "also kept")
                await stored(server, victims[1], "also kept")
            for victim in victims:
                assert (tmp_path / room_file_name(victim)).exists()
            for i in range(3):  # each open of `notes` ran the cleanup
                async with AsyncWebSocketClient("notes", host="127.0.0.1", port=port) as notes:
                    notes.doc.get("text", type=Text).insert(0, "n")
                    await stored(server, "notes", "n" * (i + 1))
                await wait_rooms_closed_but(server, victims[0])
            # The open room's later edits reach its file, not an unlinked inode.
            open_victim.doc.get("text", type=Text).insert(4, ", edited later")
            await stored(server, victims[0], "kept, edited later")
    assert text_in(tmp_path / room_file_name(victims[0])) == "kept, edited later"
    assert text_in(tmp_path / room_file_name(victims[1])) == "also kept"
    assert text_in(tmp_path / "notes_updates.y") == "nnn"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [room_file_name(v) for v in victims] + ["notes_updates.y"]
    ), "no temporary file or directory left"


async def wait_rooms_closed_but(server: AsyncWebSocketServer, kept: str) -> None:
    with fail_after(30):
        while set(server.room_manager.rooms) - {kept}:
            await sleep(0.01)


#: Escaped file names at and around the lengths 0.8.0 accepted and could not write with
#: `squash=True` (its temporary name added `.tmp-<pid>-<n>`, past 255 bytes).
NAME_LENGTHS = [240, 241, 248, 254, 255]


async def test_every_id_up_to_the_name_limit_is_stored_with_squash(tmp_path: Path) -> None:
    suffix = len("_updates.y")
    ids = [("r" * (n - suffix)) for n in NAME_LENGTHS]
    # An id of escaped bytes too: 3 bytes each once escaped.
    ids.append(" " * ((255 - suffix) // 3))
    factory = file_room_factory(tmp_path, squash=True)
    async with AsyncWebSocketServer(factory, host="127.0.0.1", port=0) as server:
        for id in ids:
            async with AsyncWebSocketClient(id, host="127.0.0.1", port=server.port) as client:
                text = client.doc.get("text", type=Text)
                for part in ["stored ", "at ", str(len(room_file_name(id)))]:
                    text += part
                    await stored(server, id, str(text))
    for id in ids:
        records = read_records(tmp_path / room_file_name(id))
        assert len(records) == 1, "squashed"
    async with AsyncWebSocketServer(factory, host="127.0.0.1", port=0) as server:
        for id in ids:
            async with AsyncWebSocketClient(id, host="127.0.0.1", port=server.port) as client:
                name = room_file_name(id)
                assert str(client.doc.get("text", type=Text)) == f"stored at {len(name)}"


async def test_an_id_past_the_name_limit_is_refused_at_join_naming_the_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    too_long = "r" * (256 - len("_updates.y"))
    async with AsyncWebSocketServer(
        file_room_factory(tmp_path, squash=True), host="127.0.0.1", port=0
    ) as server:
        with caplog.at_level(logging.WARNING), pytest.raises(ConnectionError):
            async with AsyncWebSocketClient(too_long, host="127.0.0.1", port=server.port):
                pass  # pragma: no cover
        # The server goes on serving others.
        async with AsyncWebSocketClient("fine", host="127.0.0.1", port=server.port) as client:
            client.doc.get("text", type=Text).insert(0, "ok")
    assert "more than the limit of 255 bytes" in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["fine_updates.y"]


ROOMS = 200


async def test_rooms_joined_without_an_edit_leave_no_file_and_start_few_threads(
    tmp_path: Path,
) -> None:
    """0.8.0 created (and fsynced twice) the file of every room a client merely joined, one
    blocking thread per room opening at once: 5,000 joins left 5,000 files and 512 threads, and
    each closed room kept its store's eventfd until the cyclic GC ran."""
    gc.disable()  # what is released must be released without it
    try:
        await join_idle_rooms(tmp_path)
    finally:
        gc.enable()


async def join_idle_rooms(tmp_path: Path) -> None:
    async with AsyncWebSocketServer(
        file_room_factory(tmp_path, fsync="always"), host="127.0.0.1", port=0
    ) as server:
        async with AsyncWebSocketClient("warm", host="127.0.0.1", port=server.port):
            pass
        await wait_rooms_closed(server)
        baseline, fds = thread_count(), fd_count()

        async def join(i: int) -> None:
            async with AsyncWebSocketClient(f"idle-{i}", host="127.0.0.1", port=server.port):
                pass

        with fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(ROOMS):
                    tg.start_soon(join, i)
        await wait_rooms_closed(server)
        # Idle blocking threads linger (10 s): this counts every one the joins started.
        grown, fds_held = thread_count() - baseline, fd_count() - fds
    files = sorted(p.name for p in tmp_path.iterdir())
    assert (files, grown <= MAX_BLOCKING_THREADS, fds_held <= 2) == ([], True, True), (
        f"{ROOMS} rooms joined: {len(files)} files (e.g. {files[:3]}), {grown} more threads, "
        f"{fds_held} more descriptors"
    )


def one_char_edits(n: int) -> tuple[list[bytes], bytes]:
    """`n` one-character edits, each its own update, and what a pycrdt doc that applied them
    re-encodes them to (what the original's squash writes)."""
    doc: Doc[Any] = Doc()
    text = doc.get("text", type=Text)
    updates = []
    for i in range(n):
        before = doc.get_state()
        text += "ab"[i % 2]
        updates.append(doc.get_update(before))
    reference: Doc[Any] = Doc()
    for update in updates:
        reference.apply_update(update)
    return updates, reference.get_update()


def the_one_update(path: Path) -> bytes:
    records = read_records(path)
    assert len(records) == 1
    update = checked_update(records[0])
    assert update is not None
    return update


async def test_a_squash_writes_what_a_doc_that_applied_the_edits_encodes(tmp_path: Path) -> None:
    updates, reference = one_char_edits(200)
    assert len(reference) < 250  # 200 characters, one block
    # Squashed on open: 200 records, or the one record 0.8.0 merged them to.
    for name, records in [("many.y", updates), ("merged.y", [merge_updates(*updates)])]:
        path = tmp_path / name
        path.write_bytes(encode_file(records))
        async with AsyncFileClient(path=path, squash=True) as client:
            assert str(client.doc.get("text", type=Text)) == "ab" * 100
        assert len(the_one_update(path)) <= len(reference), name
    # Squashed on every write, each edit as a client makes it.
    path = tmp_path / "edited.y"
    async with AsyncFileClient(path=path, squash=True) as client:
        text = client.doc.get("text", type=Text)
        for i in range(200):
            text += "ab"[i % 2]
            await client.flush()
        # What the client's own doc encodes (its client id, random, has a varint of its own).
        own = client.doc.get_update()
    update = the_one_update(path)
    assert len(update) <= len(own), f"{len(update)} bytes, a doc encodes {len(own)}"
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    assert str(doc.get("text", type=Text)) == "ab" * 100


async def test_a_squashing_file_room_stores_what_a_doc_encodes(tmp_path: Path) -> None:
    factory = file_room_factory(tmp_path, squash=True)
    async with AsyncWebSocketServer(factory, host="127.0.0.1", port=0) as server:
        async with AsyncWebSocketClient("sq", host="127.0.0.1", port=server.port) as client:
            text = client.doc.get("text", type=Text)
            for i in range(200):
                text += "ab"[i % 2]
                if i % 20 == 19:
                    await stored(server, "sq", str(text))
            reference = client.doc.get_update()
    update = the_one_update(tmp_path / "sq_updates.y")
    assert len(update) <= len(reference), f"{len(update)} bytes, a doc encodes {len(reference)}"


async def test_a_file_name_the_filesystem_cannot_hold_is_an_os_error_at_open(
    tmp_path: Path,
) -> None:
    with pytest.raises(OSError) as raised:
        async with AsyncFileClient(path=tmp_path / ("x" * 256)):
            pass  # pragma: no cover
    assert raised.value.errno == errno.ENAMETOOLONG
    assert "256 bytes, longer than the 255" in str(raised.value)
    assert list(tmp_path.iterdir()) == []
