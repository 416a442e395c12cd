"""Rooms are isolated: what a room's Python side raises (its `run()`, a task of its task group,
its exit) closes that room alone. Its clients get 1011, it is logged once, the server keeps
listening, every other room keeps syncing, and the next client of that id gets a fresh room."""

from __future__ import annotations

import errno
import logging
import threading
from typing import Any

import pytest
from anyio import TASK_STATUS_IGNORED, Event, create_task_group, fail_after, to_thread
from anyio.abc import TaskStatus
from pycrdt import Text
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from helpers import wait_until
from wire_websocket import Allow, AsyncWebSocketClient, AsyncWebSocketServer, Request
from wiredb import Room

pytestmark = pytest.mark.anyio

HOW = ["task", "run"]


class FragileRoom(Room):
    """The first room of id "fragile" fails once `fail` is set: in a task of its task group
    (the README's `AsyncFileClient` on a full disk), or in `run()` itself. Rooms of other ids,
    and later rooms of that id, are fine."""

    def __init__(self, id: str, how: str, fail: Event, opened: list[str]) -> None:
        super().__init__(id)
        self._how = how
        self._fail = fail
        self._fragile = id == "fragile" and "fragile" not in opened
        opened.append(id)

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        if not self._fragile:
            await super().run(task_status=task_status)
        elif self._how == "task":
            self.task_group.start_soon(self._fail_later)
            await super().run(task_status=task_status)
        else:
            task_status.started()
            await self._fail.wait()
            raise OSError(errno.ENOSPC, "No space left on device")

    async def _fail_later(self) -> None:
        await self._fail.wait()
        raise OSError(errno.ENOSPC, "No space left on device")


def close_code_once_joined(port: int, path: str, joined: threading.Event) -> int | None:
    """Connects, sets `joined` once the room sent its first frame (it is a member), then
    reads until closed: the close code."""
    with connect(f"ws://127.0.0.1:{port}{path}", open_timeout=10) as ws:
        try:
            ws.recv(timeout=10)
            joined.set()
            while True:
                ws.recv(timeout=30)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
    return None


async def converge(a: AsyncWebSocketClient, b: AsyncWebSocketClient, word: str) -> None:
    a.doc.get("text", type=Text).insert(0, word)
    text = b.doc.get("text", type=Text)
    await wait_until(b.doc, lambda: word in str(text))


@pytest.mark.parametrize("how", HOW)
async def test_a_failing_room_closes_alone(how: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wiredb")
    fail, opened = Event(), list[str]()
    codes: list[int | None] = []

    def factory(id: str) -> Room:
        return FragileRoom(id, how, fail, opened)

    async with AsyncWebSocketServer(factory, host="127.0.0.1", port=0) as server:
        port = server.port
        async with (
            AsyncWebSocketClient("steady", host="127.0.0.1", port=port) as a,
            AsyncWebSocketClient("steady", host="127.0.0.1", port=port) as b,
            create_task_group() as tg,
        ):
            await converge(a, b, "before ")
            joined = threading.Event()

            closed = Event()

            async def victim() -> None:
                code = await to_thread.run_sync(close_code_once_joined, port, "/fragile", joined)
                codes.append(code)
                closed.set()

            tg.start_soon(victim)
            assert await to_thread.run_sync(joined.wait, 10)
            fail.set()
            # The steady room's clients keep converging while (and after) the other fails.
            await converge(b, a, "during ")
            with fail_after(10):
                await closed.wait()
            assert codes == [1011]
            # The server still accepts: a new client of the steady room, and of the failed id,
            # which gets a fresh room (the factory ran again) that syncs.
            async with (
                AsyncWebSocketClient("steady", host="127.0.0.1", port=port) as c,
                AsyncWebSocketClient("fragile", host="127.0.0.1", port=port) as d,
                AsyncWebSocketClient("fragile", host="127.0.0.1", port=port) as e,
            ):
                await converge(c, a, "after ")
                await converge(d, e, "fresh ")
            assert opened.count("fragile") == 2
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1, [r.getMessage()[:200] for r in failures]
    message = failures[0].getMessage()
    assert "'fragile'" in message and "1011" in message and "No space left" in message


class FailsOnExit(Room):
    """A room whose task raises while the room closes (a file client whose last write hits a
    full disk)."""

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        await self.task_group.start(self._write_on_exit)
        await super().run(task_status=task_status)

    async def _write_on_exit(self, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        try:
            await Event().wait()
        finally:
            if self.id == "fragile":
                raise OSError(errno.ENOSPC, "No space left on device")


async def test_a_room_failing_as_it_closes_leaves_the_server_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="wiredb")
    failed = Event()
    handler = OnError(failed)
    logging.getLogger("wiredb").addHandler(handler)
    try:
        await fail_on_exit(failed)
    finally:
        logging.getLogger("wiredb").removeHandler(handler)
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    # Once for each room of that id: both raised as their last client left.
    assert [("'fragile'" in r.getMessage()) for r in failures] == [True, True]


class OnError(logging.Handler):
    """Sets an event when an error is logged (in the event loop's thread)."""

    def __init__(self, event: Event) -> None:
        super().__init__(logging.ERROR)
        self._event = event

    def emit(self, record: logging.LogRecord) -> None:
        self._event.set()


async def fail_on_exit(failed: Event) -> None:
    async with AsyncWebSocketServer(FailsOnExit, host="127.0.0.1", port=0) as server:
        port = server.port
        async with (
            AsyncWebSocketClient("steady", host="127.0.0.1", port=port) as a,
            AsyncWebSocketClient("steady", host="127.0.0.1", port=port) as b,
        ):
            async with AsyncWebSocketClient("fragile", host="127.0.0.1", port=port) as f:
                f.doc.get("text", type=Text).insert(0, "alone")
            # The fragile room closes (and raises) as its client leaves.
            with fail_after(10):
                await failed.wait()
            await converge(a, b, "after")
            async with (
                AsyncWebSocketClient("fragile", host="127.0.0.1", port=port) as d,
                AsyncWebSocketClient("fragile", host="127.0.0.1", port=port) as e,
            ):
                await converge(d, e, "fresh")
            await converge(b, a, "still")


async def test_a_hook_answer_the_server_cannot_take_refuses_that_connection_only() -> None:
    def authorize(request: Request) -> Any:
        if request.room == "odd":
            return Allow(identity=42)  # type: ignore[arg-type]
        if request.room == "junk":
            return "yes"
        return Allow()

    async with AsyncWebSocketServer(host="127.0.0.1", port=0, authorize=authorize) as server:
        for room in ("odd", "junk"):
            joined = threading.Event()
            code = await to_thread.run_sync(close_code_once_joined, server.port, f"/{room}", joined)
            assert code == 1011
        async with (
            AsyncWebSocketClient("fine", host="127.0.0.1", port=server.port) as a,
            AsyncWebSocketClient("fine", host="127.0.0.1", port=server.port) as b,
        ):
            await converge(a, b, "served")
