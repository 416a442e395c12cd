"""Durability that says what it promises: fsync policies, `flush()`, checksummed records, and
failures (ENOSPC, EIO, kill -9) that never get an edit acknowledged that is not there.

"Acknowledged" is what `flush()` returning means: under `fsync="none"` the edits are written
(they survive the process being killed), under "flush" and "always" they are fsynced (they
survive a power loss too). Under "always" every write is fsynced before it is reported, so a
`push()` of a `FileClient` is durable when it returns.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pycrdt import Map, Text

from helpers import wait_until
from update_files import HEADER, checked_update, encode_file, text_updates, trailer
from wire_file import AsyncFileClient, FileClient, FileRoom, file_room_factory
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer

pytestmark = pytest.mark.anyio

IN_CI = os.environ.get("CI") == "true"
#: The kill -9 loop's size: 5 x 200 in CI; the issue's full count is
#: WIREDB_KILL_TRIALS=50 WIREDB_KILL_EDITS=1000 (see scripts/kill_loop.sh).
KILL_TRIALS = int(os.environ.get("WIREDB_KILL_TRIALS", "5"))
KILL_EDITS = int(os.environ.get("WIREDB_KILL_EDITS", "200"))
POLICIES = ["none", "flush", "always"]


def store_state(client: AsyncFileClient | FileClient | FileRoom) -> Any:
    """The native store's counters (a private attribute: tests look inside)."""
    store = client._store if isinstance(client, FileRoom) else client._link.store
    assert store is not None
    return store.poll()


def parse_strict(data: bytes) -> tuple[list[bytes], int]:
    """The records of a file written here, and the size of a torn tail: every complete record
    must carry a valid checksum, and only the last one may be torn."""
    assert data.startswith(HEADER), data[:16]
    records: list[bytes] = []
    pos = len(HEADER)
    while pos < len(data):
        start, length, shift = pos, 0, 0
        while pos < len(data):
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        else:
            return records, len(data) - start
        if pos + length > len(data):
            return records, len(data) - start
        record = data[pos : pos + length]
        update = checked_update(record)
        assert update is not None, f"a complete record with a bad checksum at {start}"
        records.append(update)
        pos += length
    return records, 0


def file_map(path: Path) -> dict[str, Any]:
    with FileClient(path=path) as client:
        client.pull()
        return client.doc.get("map", type=Map).to_py()  # type: ignore[no-any-return]


# -- policies and flush() ---------------------------------------------------------------------


@pytest.mark.parametrize("fsync", POLICIES)
async def test_flush_makes_edits_durable_under_each_policy(tmp_path: Path, fsync: str) -> None:
    path = tmp_path / "doc.y"
    async with AsyncFileClient(path=path, fsync=fsync) as client:  # type: ignore[arg-type]
        assert client.fsync == fsync
        text = client.doc.get("text", type=Text)
        for part in ["a", "b", "c"]:
            text += part
            await client.flush()
            assert parse_strict(path.read_bytes())[1] == 0
        state = store_state(client)
        assert state.durable == state.written and state.failed == 0
        # fsyncs of appended records: never, one per flush that found something written since
        # the last one, or one per write.
        if fsync == "none":
            assert state.syncs == 0
        elif fsync == "flush":
            assert state.syncs == 3
        else:
            assert state.syncs == state.writes >= 3
        await client.flush()
        assert store_state(client).syncs == state.syncs, "nothing new: no fsync"
    records, torn = parse_strict(path.read_bytes())
    assert torn == 0 and len(records) >= 3
    async with AsyncFileClient(path=path) as client:
        assert str(client.doc.get("text", type=Text)) == "abc"


@pytest.mark.parametrize("fsync", POLICIES)
def test_blocking_client_push_and_flush(tmp_path: Path, fsync: str) -> None:
    path = tmp_path / "doc.y"
    with FileClient(path=path, fsync=fsync) as client:  # type: ignore[arg-type]
        client.pull()
        text = client.doc.get("text", type=Text)
        text += "pushed"
        client.push()
        state = store_state(client)
        assert state.written >= 1
        assert state.syncs == (state.writes if fsync == "always" else 0)
        text += " flushed"
        client.flush()  # pushes, then waits until durable
        state = store_state(client)
        assert state.syncs == {"none": 0, "flush": 1, "always": state.writes}[fsync]
    with FileClient(path=path) as client:
        client.pull()
        assert str(client.doc.get("text", type=Text)) == "pushed flushed"


async def test_a_room_and_a_server_flush_every_room(tmp_path: Path) -> None:
    factory = file_room_factory(tmp_path, fsync="flush")
    async with AsyncWebSocketServer(factory, host="127.0.0.1", port=0) as server:
        async with (
            AsyncWebSocketClient("a", host="127.0.0.1", port=server.port) as a,
            AsyncWebSocketClient("b", host="127.0.0.1", port=server.port) as b,
        ):
            a.doc.get("text", type=Text).insert(0, "room a")
            b.doc.get("text", type=Text).insert(0, "room b")
            rooms = server.room_manager.rooms
            for id in ("a", "b"):
                room = rooms[id]
                mirror = room.doc.get("text", type=Text)
                want = f"room {id}"
                await wait_until(room.doc, lambda: str(mirror) == want)  # noqa: B023
            await server.room_manager.flush()
            for id in ("a", "b"):
                room = rooms[id]
                assert isinstance(room, FileRoom) and room.fsync == "flush"
                state = store_state(room)
                assert state.durable == state.written >= 1 and state.syncs == 1
                # On disk and checksummed, while the room is still open.
                records, torn = parse_strict(room.path.read_bytes())
                assert torn == 0 and records


async def test_an_unknown_policy_is_refused(tmp_path: Path) -> None:
    for make in (
        lambda: AsyncFileClient(path=tmp_path / "x.y", fsync="sometimes"),  # type: ignore[arg-type]
        lambda: FileClient(path=tmp_path / "x.y", fsync="sometimes"),  # type: ignore[arg-type]
        lambda: FileRoom("r", directory=tmp_path, fsync="sometimes"),  # type: ignore[arg-type]
        lambda: file_room_factory(tmp_path, fsync="sometimes"),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValueError, match="fsync must be one of"):
            make()


# -- checksums: a torn or garbage tail is detected exactly -------------------------------------


async def test_a_corrupt_last_record_is_cut_exactly(tmp_path: Path) -> None:
    updates = text_updates(["kept,", "also kept,", "the last record " * 10])
    whole = encode_file(updates, checked=True)
    good = len(encode_file(updates[:2], checked=True))
    path = tmp_path / "doc.y"
    # Any byte of the last record changed (its length, its update, its trailer): the record
    # is refused and exactly it is cut, never taken for a legacy record nor more cut.
    for offset in range(good, len(whole)):
        damaged = bytearray(whole)
        damaged[offset] ^= 0xFF
        path.write_bytes(bytes(damaged))
        async with AsyncFileClient(path=path) as client:
            assert str(client.doc.get("text", type=Text)) == "kept,also kept,", offset
            assert store_state(client).checked == 2
        assert path.read_bytes() == whole[:good], offset


def test_a_torn_checksummed_record_is_cut_at_every_offset(tmp_path: Path) -> None:
    updates = text_updates(["kept,", "torn " * 40])
    whole = encode_file(updates, checked=True)
    good = len(encode_file(updates[:1], checked=True))
    path = tmp_path / "doc.y"
    for cut in range(good + 1, len(whole)):
        path.write_bytes(whole[:cut])
        with FileClient(path=path) as client:
            client.pull()
            assert str(client.doc.get("text", type=Text)) == "kept,", cut
            assert store_state(client).torn_bytes == cut - good
        assert path.read_bytes() == whole[:good], cut


async def test_a_zero_filled_tail_is_cut(tmp_path: Path) -> None:
    # A crash after the file grew but before its data reached the disk leaves zeros: they
    # decode as an empty update with bytes left over, so after checksummed records they are
    # refused.
    updates = text_updates(["kept"])
    whole = encode_file(updates, checked=True)
    path = tmp_path / "doc.y"
    path.write_bytes(whole + bytes([40]) + bytes(40))
    async with AsyncFileClient(path=path) as client:
        assert str(client.doc.get("text", type=Text)) == "kept"
        assert store_state(client).torn_bytes == 41
    assert path.read_bytes() == whole


async def test_a_hole_is_skipped_and_the_file_rewritten(tmp_path: Path) -> None:
    # A writer killed mid-record while another process appended after it: the records after
    # the hole are found by their checksums, and the file is rewritten without the hole.
    path = tmp_path / "doc.y"
    first = text_updates(["a", "b"], name="first")
    second = text_updates(["c", "d"], name="second")
    torn = encode_file(text_updates(["torn"] * 10, name="torn")[-1:], checked=True)
    data = encode_file(first, checked=True) + torn[len(HEADER) : -4]
    data += encode_file(second, checked=True)[len(HEADER) :]
    path.write_bytes(data)
    async with AsyncFileClient(path=path) as client:
        assert str(client.doc.get("first", type=Text)) == "ab"
        assert str(client.doc.get("second", type=Text)) == "cd"
        state = store_state(client)
        assert (state.records, state.holes) == (4, 1)
    records, tail = parse_strict(path.read_bytes())
    assert (len(records), tail) == (4, 0), "rewritten without the hole"


def test_legacy_records_without_trailers_still_load(tmp_path: Path) -> None:
    path = tmp_path / "doc.y"
    updates = text_updates(["old ", "file"])
    path.write_bytes(encode_file(updates))
    with FileClient(path=path) as client:
        client.pull()
        assert str(client.doc.get("text", type=Text)) == "old file"
        client.doc.get("text", type=Text).insert(0, "new ")
        client.push()
    data = path.read_bytes()
    assert data.startswith(encode_file(updates)), "legacy records left as they were"
    last = data[len(encode_file(updates)) :]
    assert last[1:].endswith(trailer(last[1:-5])), "ours appended with a trailer"


# -- ENOSPC: a small tmpfs ----------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (root is needed to mount it: CI runs as root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        if IN_CI:
            pytest.fail(f"cannot mount a tmpfs: {done.stderr}")
        pytest.skip(f"cannot mount a tmpfs: {done.stderr}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path, leave: int) -> Path:
    """Fills the filesystem of `directory` but `leave` bytes; returns the filler file."""
    filler = directory / "filler"
    stat = os.statvfs(directory)
    free = stat.f_bavail * stat.f_frsize
    filler.write_bytes(b"\0" * max(0, free - leave))
    return filler


async def test_enospc_is_raised_by_flush_and_nothing_is_lost_once_space_is_back(
    small_fs: Path,
) -> None:
    path = small_fs / "doc.y"
    big = "x" * 3000
    failed_at = None
    async with AsyncFileClient(path=path, fsync="always") as client:
        filler = fill(small_fs, leave=16 * 1024)
        edits = client.doc.get("map", type=Map)
        for i in range(40):
            edits[f"k{i}"] = big
            try:
                await client.flush()
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
                failed_at = i
                break
        assert failed_at is not None, "the filesystem never filled up"
        state = store_state(client)
        assert state.failed > state.durable, "the failed edit is not acknowledged"
        # What is on disk is whole: the failed write was cut back, no torn record.
        assert parse_strict(path.read_bytes())[1] == 0
        # Still failing while the disk is full, and the client keeps working.
        edits["more"] = "edit"
        with pytest.raises(OSError):
            await client.flush()
        filler.unlink()
        await client.flush()
        state = store_state(client)
        assert state.durable == state.written > state.failed
    on_disk = file_map(path)
    assert sorted(on_disk) == sorted([f"k{i}" for i in range(failed_at + 1)] + ["more"])
    assert parse_strict(path.read_bytes())[1] == 0


async def test_enospc_in_a_server_room_is_not_acknowledged_and_the_room_keeps_serving(
    small_fs: Path,
) -> None:
    factory = file_room_factory(small_fs, fsync="always")
    big = "y" * 3000
    async with AsyncWebSocketServer(factory, host="127.0.0.1", port=0) as server:
        async with AsyncWebSocketClient("full", host="127.0.0.1", port=server.port) as client:
            room = server.room_manager.rooms["full"]
            mirror = room.doc.get("map", type=Map)
            edits = client.doc.get("map", type=Map)
            filler = fill(small_fs, leave=16 * 1024)
            failures = 0
            for i in range(40):
                key = f"k{i}"
                edits[key] = big
                await wait_until(room.doc, lambda: key in mirror)  # noqa: B023
                try:
                    await server.room_manager.flush()
                except OSError as error:
                    assert error.errno == errno.ENOSPC
                    failures += 1
                    if failures == 3:
                        break
            assert failures == 3, "the filesystem never filled up"
            # The server survives and serves: a joiner gets every edit, failed ones included.
            async with AsyncWebSocketClient("full", host="127.0.0.1", port=server.port) as other:
                joined = other.doc.get("map", type=Map)
                await wait_until(other.doc, lambda: len(joined) == len(edits))
            filler.unlink()
            await server.room_manager.flush()
            expected = sorted(edits.keys())
    # The room closed: everything, failed edits included, is in its file.
    path = small_fs / "full_updates.y"
    assert sorted(file_map(path)) == expected
    assert parse_strict(path.read_bytes())[1] == 0


# -- EIO: injected by strace into the real syscalls of a server process ------------------------

SERVER_CHILD = textwrap.dedent(
    """
    import sys, anyio
    from pycrdt import Map
    from wire_file import file_room_factory
    from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer

    directory, fsync, count, backend, prefix, join = sys.argv[1:7]

    async def until(doc, predicate):
        while not predicate():
            changed = anyio.Event()
            subscription = doc.observe(lambda _: changed.set())
            try:
                if predicate():
                    return
                await changed.wait()
            finally:
                doc.unobserve(subscription)

    async def main():
        factory = file_room_factory(directory, fsync=fsync)
        async with AsyncWebSocketServer(factory, host="127.0.0.1", port=0) as server:
            async with AsyncWebSocketClient("room", host="127.0.0.1", port=server.port) as client:
                mirror = server.room_manager.rooms["room"].doc.get("map", type=Map)
                doc = server.room_manager.rooms["room"].doc
                edits = client.doc.get("map", type=Map)
                for i in range(int(count)):
                    key = f"{prefix}{i}"
                    edits[key] = i
                    await until(doc, lambda: key in mirror)
                    try:
                        await server.room_manager.flush()
                    except OSError as error:
                        print("FAILED", key, error.errno, flush=True)
                    else:
                        print("ACK", key, flush=True)
                if join == "join":
                    async with AsyncWebSocketClient(
                        "room", host="127.0.0.1", port=server.port
                    ) as joiner:
                        joined = joiner.doc.get("map", type=Map)
                        await until(joiner.doc, lambda: len(joined) == len(edits))
                        print("JOINED", len(joined), flush=True)

    anyio.run(main, backend=backend)
    """
)

CLIENT_CHILD = textwrap.dedent(
    """
    import sys, anyio
    from pycrdt import Map
    from wire_file import AsyncFileClient

    path, fsync, count, backend, prefix = sys.argv[1:6]

    async def main():
        async with AsyncFileClient(path=path, fsync=fsync) as client:
            edits = client.doc.get("map", type=Map)
            for i in range(int(count)):
                key = f"{prefix}{i}"
                edits[key] = i
                await client.flush()
                print("ACK", key, flush=True)

    anyio.run(main, backend=backend)
    """
)


def strace_or_skip() -> str:
    strace = shutil.which("strace")
    if strace is None:
        if IN_CI:
            pytest.fail("strace is missing (scripts/test.sh installs it)")
        pytest.skip("strace is not installed")
    return strace


def seed_room_file(path: Path) -> None:
    """An existing room file, so that opening it needs no fsync (a new file's header is
    fsynced, and the injected EIO would fail the open)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_file(text_updates(["seed"], name="seed"), checked=True))


def run_traced(strace: str, inject: str, log: Path, argv: list[str]) -> tuple[list[list[str]], str]:
    """Runs `argv` under strace with `inject`; returns its stdout's lines, split, and stderr."""
    done = subprocess.run(
        [strace, "-f", "-qq", "-o", str(log), *inject.split(), *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [line.split() for line in done.stdout.splitlines()], done.stderr


async def test_eio_on_fsync_is_never_acknowledged_and_the_server_survives(
    tmp_path: Path, anyio_backend: str
) -> None:
    strace = strace_or_skip()
    room_file = tmp_path / "data" / "room_updates.y"
    seed_room_file(room_file)
    # Every fsync of the process fails (only the store fsyncs): the appended records', and
    # the rewrites' new files: nothing can be made durable.
    inject = "-e trace=fsync,fdatasync,rename -e inject=fsync,fdatasync:error=EIO"
    argv = [sys.executable, "-c", SERVER_CHILD, str(room_file.parent), "always", "5"]
    argv += [anyio_backend, "k", "join"]
    lines, stderr = run_traced(strace, inject, tmp_path / "strace.log", argv)
    assert [line[0] for line in lines] == ["FAILED"] * 5 + ["JOINED"], stderr[-3000:]
    assert all(line[2] == str(errno.EIO) for line in lines[:5])
    assert lines[-1] == ["JOINED", "5"], "the room kept serving every edit"
    assert "may not be on disk" in stderr, stderr[-3000:]
    log = (tmp_path / "strace.log").read_text()
    assert "EIO (Input/output error) (INJECTED)" in log
    assert " = 0" not in "".join(line for line in log.splitlines() if "sync(" in line)


async def test_after_eio_the_file_is_rewritten_never_fsynced_again(
    tmp_path: Path, anyio_backend: str
) -> None:
    strace = strace_or_skip()
    room_file = tmp_path / "data" / "room_updates.y"
    seed_room_file(room_file)
    # Appended records are fdatasync'ed; a new file (a rewrite's) is fsync'ed: every
    # fdatasync fails, and the store rewrites the file (a new file, fsynced, renamed over the
    # old one), and only then acknowledges.
    inject = "-e trace=fsync,fdatasync,rename -e inject=fdatasync:error=EIO"
    argv = [sys.executable, "-c", SERVER_CHILD, str(room_file.parent), "always", "5"]
    argv += [anyio_backend, "k", "-"]
    lines, stderr = run_traced(strace, inject, tmp_path / "strace.log", argv)
    assert [line[0] for line in lines] == ["ACK"] * 5, stderr[-3000:]
    calls = [
        line
        for line in (tmp_path / "strace.log").read_text().splitlines()
        if "fdatasync(" in line or "rename(" in line
    ]
    failed = [i for i, line in enumerate(calls) if "fdatasync(" in line and "INJECTED" in line]
    assert len(failed) >= 5, calls
    for i in failed:
        # Never a second fsync of the file whose fsync failed: the next call is the rename
        # that replaces it.
        assert i + 1 < len(calls) and "rename(" in calls[i + 1], calls[i : i + 2]
    assert sorted(k for k in file_map(room_file) if k.startswith("k")) == [
        f"k{i}" for i in range(5)
    ]


# -- kill -9: every acknowledged edit is there, and the file always loads -----------------------


async def run_until_killed(argv: list[str], kill_after: int, stderr: Path) -> list[str]:
    """Runs a child that prints `ACK <key>` per acknowledged edit, kills it (SIGKILL) once
    `kill_after` acks were read, and returns every key it acknowledged (read to the end)."""
    acked: list[str] = []
    buffer = b""
    with stderr.open("ab") as err:
        process = await anyio.open_process(argv, stdout=subprocess.PIPE, stderr=err)
    async with process:
        assert process.stdout is not None
        killed = False
        with anyio.fail_after(300):
            async for chunk in process.stdout:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                acked += [line.split()[1].decode() for line in lines if line.startswith(b"ACK")]
                if len(acked) >= kill_after and not killed:
                    process.kill()
                    killed = True
            await process.wait()
    return acked


def check_file(path: Path, acked: list[str], stats: dict[str, int]) -> None:
    """The file loads, holds every acknowledged edit, and only its last record may be torn."""
    records, torn = parse_strict(path.read_bytes())
    stats["torn tails"] += torn > 0
    on_disk = file_map(path)
    lost = [key for key in acked if key not in on_disk]
    stats["lost"] += len(lost)
    assert not lost, f"{len(lost)} acknowledged edits lost, e.g. {lost[:5]}"
    stats["records on disk"] = len(records)


@pytest.mark.parametrize("fsync", POLICIES)
@pytest.mark.parametrize("child", ["client", "server"])
@pytest.mark.timeout(3600)
async def test_kill_9_loses_no_acknowledged_edit(
    tmp_path: Path, anyio_backend: str, child: str, fsync: str
) -> None:
    rng = random.Random(f"{child}-{fsync}-{anyio_backend}")
    path = tmp_path / ("doc.y" if child == "client" else "data/room_updates.y")
    stats = {"trials": 0, "acked": 0, "lost": 0, "torn tails": 0, "records on disk": 0}
    acked: list[str] = []
    for trial in range(KILL_TRIALS):
        prefix = f"t{trial}-"
        if child == "client":
            argv = [sys.executable, "-c", CLIENT_CHILD, str(path), fsync, str(KILL_EDITS)]
            argv += [anyio_backend, prefix]
        else:
            argv = [sys.executable, "-c", SERVER_CHILD, str(path.parent), fsync]
            argv += [str(KILL_EDITS), anyio_backend, prefix, "-"]
        kill_after = rng.randint(1, KILL_EDITS)
        got = await run_until_killed(argv, kill_after, tmp_path / "child.log")
        assert len(got) >= kill_after, (tmp_path / "child.log").read_text()[-3000:]
        acked += got
        stats["trials"] += 1
        stats["acked"] += len(got)
        # The file loads after every crash, with every edit of every trial acknowledged.
        check_file(path, acked, stats)
    print(f"\nkill -9 loop ({child}, fsync={fsync}, {anyio_backend}): {json.dumps(stats)}")
    assert stats["lost"] == 0
