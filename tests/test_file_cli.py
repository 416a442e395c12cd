"""`wiredb serve` persists every room by default, and a kill -9 loses no acknowledged edit.

Acknowledged, here: the edit's record is complete in the room's file (the server's `write(2)`
for it returned), which the test sees by reading the file while edits stream in. That is the
durability promise of the native store: with the default `--write-delay 0`, an update is
written as soon as the store's task runs after the room applied it, and from then on a killed
server loses it no more (it is in the kernel's page cache; a power loss needs the fsync done
when the room closes).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from anyio import create_task_group, fail_after, sleep
from pycrdt import Doc, Text

from update_files import HEADER
from wire_websocket import AsyncWebSocketClient

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


def complete_records_text(path: Path) -> str:
    """The text of the file's complete records (a write may be under way: a torn tail is
    skipped, as the server does on load)."""
    doc: Doc[Any] = Doc()
    if not path.exists():
        return ""
    data = path.read_bytes()
    if not data.startswith(HEADER):
        return ""
    pos = len(HEADER)
    while pos < len(data):
        length, shift, start = 0, 0, pos
        while pos < len(data):
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        else:
            break
        if pos + length > len(data) or start == pos:
            break
        doc.apply_update(data[pos : pos + length])
        pos += length
    return str(doc.get("text", type=Text))


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


async def test_a_killed_server_restarted_serves_every_acknowledged_edit(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = data / "stream_updates.y"
    expected = "".join(f"{i}," for i in range(100_000))
    acknowledged = ""
    with serve(tmp_path, "--directory", str(data)) as (process, port):
        async with create_task_group() as tg:

            async def stream() -> None:
                try:
                    async with AsyncWebSocketClient(
                        "stream", host="127.0.0.1", port=port
                    ) as client:
                        text = client.doc.get("text", type=Text)
                        for i in range(100_000):
                            text += f"{i},"
                            await sleep(0.0005)
                except (ConnectionError, OSError):
                    pass  # the server was killed under it: expected

            tg.start_soon(stream)
            with fail_after(30):
                while acknowledged.count(",") < 300:
                    acknowledged = complete_records_text(path)
                    await sleep(0.001)
            process.send_signal(signal.SIGKILL)  # mid-stream: the client is still sending
            process.wait(timeout=20)
            tg.cancel_scope.cancel()
    assert expected.startswith(acknowledged)
    with serve(tmp_path, "--directory", str(data)) as (process, port):
        async with AsyncWebSocketClient("stream", host="127.0.0.1", port=port) as client:
            served = str(client.doc.get("text", type=Text))
    print(f"acknowledged {acknowledged.count(',')} edits, served {served.count(',')}")
    assert served.startswith(acknowledged), (len(served), len(acknowledged))
    assert expected.startswith(served), "a hole or garbage after the restart"


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
