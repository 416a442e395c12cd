"""Log lines stay small whatever a client sends: room ids, paths and the errors quoting them are
clipped (Python's records and the native lines on stderr alike), and a room id the server
refuses is a one-line warning, not an error with a traceback."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

import pytest
from anyio import TASK_STATUS_IGNORED, to_thread
from anyio.abc import TaskStatus
from anyio.lowlevel import checkpoint
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

from wire_file import file_room_factory
from wire_websocket import Allow, AsyncWebSocketClient, AsyncWebSocketServer, Request
from wiredb import Room

pytestmark = pytest.mark.anyio

#: Larger than any log line may be.
LONG = 5_000
#: What a clipped line may hold: a few clipped values and some words.
BOUND = 1_000


def close_code(port: int, path: str) -> int | None:
    try:
        with connect(f"ws://127.0.0.1:{port}{path}", open_timeout=10) as ws:
            while True:
                ws.recv(timeout=30)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    except InvalidHandshake:
        return None


def test_clipping_keeps_short_text_and_cuts_long_text_with_its_length() -> None:
    from wiredb._log import bounded_traceback, clip, clipped

    assert clip("room") == "room"
    assert clip("a\nforged\x1b[31m") == "a\\nforged\\x1b[31m"
    assert clipped("a\nb") == "'a\\nb'"
    long = clipped("x" * 1_000_000)
    assert len(long) < 250 and long.endswith("… (1000000 chars)")
    try:
        raise ValueError("y" * 100_000)
    except ValueError as error:
        text = bounded_traceback(error)
    assert "ValueError" in text and len(text) < 2_000


async def test_a_refused_room_id_is_one_short_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    refused = "x" * LONG  # no file can be named after it
    async with AsyncWebSocketServer(
        file_room_factory(tmp_path), host="127.0.0.1", port=0
    ) as server:
        assert await to_thread.run_sync(close_code, server.port, "/" + refused) == 1011
        # The server goes on.
        async with AsyncWebSocketClient("fine", host="127.0.0.1", port=server.port) as client:
            await client.synchronized.wait()
    ours = [r for r in caplog.records if r.name.startswith("wire")]
    records = [r for r in ours if "xxxxxxxx" in r.getMessage()]
    assert [r.levelname for r in records] == ["WARNING"]
    assert records[0].exc_info is None and records[0].exc_text is None
    assert all(len(r.getMessage()) < BOUND for r in ours)
    native = capfd.readouterr().err
    assert "xxxxxxxx" in native  # the native side logged the refusal too, clipped
    assert all(len(line) < BOUND for line in native.splitlines())


async def test_a_room_id_cannot_forge_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="wiredb")
    # Refused (too long for a file name), so logged; the line break comes early, unclipped.
    forged = "ab\nFORGED ERROR everything is fine " + "x" * 300
    async with AsyncWebSocketServer(
        file_room_factory(tmp_path), host="127.0.0.1", port=0
    ) as server:
        path = "/" + quote(forged)
        assert await to_thread.run_sync(close_code, server.port, path) == 1011
    native = capfd.readouterr().err
    assert "xxxxxxxx" in native
    assert not any(line.startswith("FORGED") for line in native.splitlines())
    assert not any(
        line.startswith("FORGED") for r in caplog.records for line in r.getMessage().splitlines()
    )


class FailingRoom(Room):
    """Fails as soon as it started (its store cannot write, say)."""

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await checkpoint()
        raise RuntimeError(f"cannot store {self.id}")


async def test_a_failed_room_with_a_long_id_is_logged_clipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="wiredb")
    long_id = "y" * LONG
    async with AsyncWebSocketServer(FailingRoom, host="127.0.0.1", port=0) as server:
        assert await to_thread.run_sync(close_code, server.port, "/" + long_id) == 1011
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    message = record.getMessage()
    assert "yyyyyyyy" in message and "cannot store" in message
    # Clipped: the id twice (the room, the error's message) at most a few hundred chars each.
    assert long_id not in message and len(message) < 4 * BOUND


async def test_a_failing_hook_logs_the_path_clipped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="wire_websocket")

    def authorize(request: Request) -> Allow:
        raise LookupError(f"no session for {request.path}")

    path = "/" + "z" * LONG
    async with AsyncWebSocketServer(host="127.0.0.1", port=0, authorize=authorize) as server:
        assert await to_thread.run_sync(close_code, server.port, path) == 1011
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    message = record.getMessage()
    assert "zzzzzzzz" in message and "LookupError" in message
    assert path not in message and len(message) < 4 * BOUND
    assert record.exc_info is None
