"""`wiredb serve` persists every room by default, and a kill -9 loses no acknowledged edit.

Acknowledged, for the store's promise: the edit's record is complete in the room's file (the
server's `write(2)` for it returned), which the test sees by reading the file while edits
stream in. With `--write-delay 0`, an update is written as soon as the store's task runs after
the room applied it, and from then on a killed server loses it no more (it is in the kernel's
page cache; with `--fsync always` it is fsynced too). The room relays an update to its peers
without waiting for that write (persisting first would add a write, or an fsync, to every
edit's latency), so a peer may have received an edit that a kill then loses from the file;
the peer's resync after reconnecting brings it back (tested below).
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from anyio import create_task_group, sleep, to_thread
from pycrdt import Doc, Text

from helpers import wait_until
from steady_stream import written
from update_files import checked_update, parse_records, read_varuint
from wire_websocket import AsyncWebSocketClient
from wiredb import Reconnect

pytestmark = pytest.mark.anyio


@contextmanager
def serve(cwd: Path, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A `wiredb serve` process on a free port; its log goes to a file (a pipe nobody reads
    could fill up and block it)."""
    log = cwd / "server.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "wiredb", "serve", "--port", "0", *args],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    try:
        port = None
        start = log.stat().st_size if log.exists() else 0
        for _ in range(2000):
            text = log.read_bytes()[start:].decode(errors="replace")
            match = re.search(r"listening on ws://127\.0\.0\.1:(\d+)", text)
            if match:
                port = int(match.group(1))
                break
            assert process.poll() is None, text
            time.sleep(0.01)
        assert port is not None, log.read_text()
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=20)


async def write_stream(port: int, round: int) -> None:
    """Appends `round.i,` to room "stream"'s text, i = 0, 1, ..., until the server is gone."""
    with suppress(ConnectionError, OSError):
        async with AsyncWebSocketClient(
            "stream", host="127.0.0.1", port=port, reconnect=False
        ) as writer:
            text = writer.doc.get("text", type=Text)
            for i in range(1_000_000):
                text += f"{round}.{i},"
                await sleep(0.0005)


def complete_records_text(path: Path) -> str:
    """The text of the file's complete records (a write may be under way: a torn tail is
    skipped, as the server does on load)."""
    return written(path)[0]


async def test_serve_persists_rooms_by_default(tmp_path: Path) -> None:
    with serve(tmp_path) as (process, port):
        assert "persisted in" in (tmp_path / "server.log").read_text()
        async with AsyncWebSocketClient("notes", host="127.0.0.1", port=port) as client:
            client.doc.get("text", type=Text).insert(0, "kept")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    assert complete_records_text(tmp_path / "wiredb-data" / "notes_updates.y") == "kept"
    with serve(tmp_path) as (process, port):
        async with AsyncWebSocketClient("notes", host="127.0.0.1", port=port) as client:
            assert str(client.doc.get("text", type=Text)) == "kept"


async def test_serve_no_persist_keeps_rooms_in_memory(tmp_path: Path) -> None:
    with serve(tmp_path, "--no-persist") as (process, port):
        async with AsyncWebSocketClient("notes", host="127.0.0.1", port=port) as client:
            client.doc.get("text", type=Text).insert(0, "gone")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    assert not (tmp_path / "wiredb-data").exists()


def parts_of(text: str) -> set[str]:
    """The parts `"<round>.<i>,"` a streamed text holds."""
    return {f"{part}," for part in text.split(",") if part}


def check_no_hole(served: set[str]) -> None:
    """Each round's parts are 0..k with nothing missing in between, and nothing else is there
    (the file is appended to in order: a hole is a lost record, a stranger garbage)."""
    rounds: dict[int, set[int]] = {}
    for part in served:
        match = re.fullmatch(r"(\d+)\.(\d+),", part)
        assert match, f"garbage in the served text: {part!r}"
        rounds.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    for round, indices in rounds.items():
        assert indices == set(range(max(indices) + 1)), f"a hole in round {round}"


async def test_a_killed_server_restarted_serves_every_acknowledged_edit(tmp_path: Path) -> None:
    """`wiredb serve --fsync always` is killed (SIGKILL) three times, each time at a random
    point of a stream of edits that a second client watches. An edit counts as acknowledged
    once its record is complete in the room's file (the store's promise). Each restart serves
    every edit acknowledged before any kill, with no hole."""
    data = tmp_path / "data"
    path = data / "stream_updates.y"
    seed = random.randrange(1 << 32)
    print(f"random seed {seed}")
    rng = random.Random(seed)
    acknowledged: set[str] = set()
    args = ("--directory", str(data), "--fsync", "always")

    for round in range(3):
        with serve(tmp_path, *args) as (process, port):
            async with create_task_group() as tg:
                with suppress(ConnectionError, OSError):
                    async with AsyncWebSocketClient(
                        "stream", host="127.0.0.1", port=port, reconnect=False
                    ) as observer:
                        text = observer.doc.get("text", type=Text)
                        # Synchronized on entry: what the restarted server serves.
                        served = parts_of(str(text))
                        assert acknowledged <= served, sorted(acknowledged - served)[:10]
                        check_no_hole(served)
                        tg.start_soon(write_stream, port, round)
                        target = rng.randrange(50, 800)
                        await wait_until(
                            observer.doc,
                            lambda: str(text).count(f",{round}.") >= target,  # noqa: B023
                            timeout=60,
                        )
                        acknowledged |= parts_of(complete_records_text(path))
                        process.send_signal(signal.SIGKILL)  # mid-stream
                        process.wait(timeout=20)
                        tg.cancel_scope.cancel()
    with serve(tmp_path, *args) as (process, port):
        async with AsyncWebSocketClient("stream", host="127.0.0.1", port=port) as client:
            served = parts_of(str(client.doc.get("text", type=Text)))
    print(f"acknowledged {len(acknowledged)} edits, served {len(served)}")
    assert acknowledged <= served, sorted(acknowledged - served)[:10]
    check_no_hole(served)


async def test_edits_a_kill_lost_come_back_with_the_client_that_saw_them(tmp_path: Path) -> None:
    """What a kill loses from the file is not lost to the room: a peer that received it
    has it in its document, and its resync after reconnecting sends it back."""
    data = tmp_path / "data"
    args = ("--directory", str(data), "--fsync", "always")
    fast = Reconnect(initial_delay=0.02, max_delay=0.2)
    seen: set[str] = set()

    with serve(tmp_path, *args) as (process, port):
        async with AsyncWebSocketClient(
            "stream", host="127.0.0.1", port=port, reconnect=fast
        ) as observer:
            text = observer.doc.get("text", type=Text)
            async with create_task_group() as tg:
                tg.start_soon(write_stream, port, 0)
                target = random.randrange(50, 800)
                await wait_until(observer.doc, lambda: str(text).count(",0.") >= target, timeout=60)
                seen = parts_of(str(text))
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=20)
                tg.cancel_scope.cancel()
            with serve(tmp_path, *args, "--port", str(port)) as (_, again):
                assert again == port
                # The observer comes back on its own and resyncs: a newcomer then gets
                # everything it saw.
                async with AsyncWebSocketClient("stream", host="127.0.0.1", port=port) as newcomer:
                    fresh = newcomer.doc.get("text", type=Text)
                    await wait_until(newcomer.doc, lambda: seen <= parts_of(str(fresh)), timeout=30)
                    check_no_hole(parts_of(str(fresh)))


APPENDER = textwrap.dedent(
    """
    import sys

    import anyio
    from pycrdt import Text
    from wire_file import AsyncFileClient

    path, name, count, backend = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

    async def main() -> None:
        async with AsyncFileClient(path=path) as client:
            print("ready", flush=True)
            sys.stdin.readline()  # both processes have the file open: go
            text = client.doc.get(name, type=Text)
            for i in range(count):
                text += f"{i},"
                if i % 7 == 0:
                    await anyio.sleep(0.0005)

    anyio.run(main, backend=backend)
    """
)


async def test_two_processes_appending_to_one_path_never_interleave_records(
    tmp_path: Path, anyio_backend: str
) -> None:
    path = tmp_path / "shared.y"
    count = 1500

    backend = anyio_backend

    def run_both() -> list[int]:
        with ExitStack() as stack:
            processes = [
                stack.enter_context(
                    subprocess.Popen(
                        [sys.executable, "-c", APPENDER, str(path), name, str(count), backend],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                    )
                )
                for name in ("a", "b")
            ]
            for process in processes:
                stack.callback(process.kill)  # a no-op once it has exited
            for process in processes:
                assert process.stdout is not None
                assert process.stdout.readline() == b"ready\n"
            for process in processes:
                assert process.stdin is not None
                process.stdin.write(b"go\n")
                process.stdin.flush()
            return [process.wait(timeout=120) for process in processes]

    assert await to_thread.run_sync(run_both) == [0, 0]
    # Strict: every record whole, its checksum holding, nothing between records.
    records = parse_records(path.read_bytes())
    assert all(checked_update(record) is not None for record in records)
    doc: Doc[Any] = Doc()
    for record in records:
        update = checked_update(record)
        assert update is not None
        doc.apply_update(update)
    expected = "".join(f"{i}," for i in range(count))
    assert str(doc.get("a", type=Text)) == expected
    assert str(doc.get("b", type=Text)) == expected
    # And they did write at the same time: the writers' records alternate in the file.
    writers = [first_client(checked_update(record) or b"") for record in records]
    turns = sum(1 for before, after in pairwise(writers) if before != after)
    print(f"{len(records)} records, {turns} changes of writer")
    assert turns >= 2


def first_client(update: bytes) -> int:
    """The client ID of an update's first structs (a v1 update: the number of clients, then
    for each the number of its structs and its ID, as varuints)."""
    values: list[int] = []
    pos = 0
    while len(values) < 3:
        read = read_varuint(update, pos)
        assert read is not None, "an update cut short"
        value, pos = read
        values.append(value)
    return values[2]


async def test_serve_fsync_flag(tmp_path: Path) -> None:
    with serve(tmp_path, "--fsync", "always") as (process, port):
        assert "(fsync: always)" in (tmp_path / "server.log").read_text()
        async with AsyncWebSocketClient("notes", host="127.0.0.1", port=port) as client:
            client.doc.get("text", type=Text).insert(0, "durable")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    assert complete_records_text(tmp_path / "wiredb-data" / "notes_updates.y") == "durable"
    refused = subprocess.run(
        [sys.executable, "-m", "wiredb", "serve", "--fsync", "sometimes"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "invalid choice" in refused.stderr
