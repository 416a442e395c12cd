"""The WebSocket wire: server, async and blocking clients, rooms."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest
from anyio import (
    TASK_STATUS_IGNORED,
    Event,
    create_task_group,
    fail_after,
    sleep_forever,
    to_thread,
)
from anyio.abc import TaskStatus
from pycrdt import Array, Doc, Map, Text

from helpers import wait_until
from marks import check_one_pull_applies_everything, mark
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer, WebSocketClient
from wiredb import Room

pytestmark = pytest.mark.anyio


async def test_clients_of_a_room_converge_on_concurrent_edits() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        async with (
            AsyncWebSocketClient("r", host="127.0.0.1", port=server.port) as a,
            AsyncWebSocketClient("r", host="127.0.0.1", port=server.port) as b,
        ):
            a.doc.get("text", type=Text).insert(0, "left ")
            b.doc.get("text", type=Text).insert(0, "right ")
            text_a, text_b = a.doc.get("text", type=Text), b.doc.get("text", type=Text)
            await wait_until(a.doc, lambda: len(str(text_a)) == 11)
            await wait_until(b.doc, lambda: str(text_b) == str(text_a))


async def test_twenty_clients_converge() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        clients = [
            AsyncWebSocketClient("crowd", host="127.0.0.1", port=server.port) for _ in range(20)
        ]
        for client in clients:
            await client.__aenter__()
        try:
            for i, client in enumerate(clients):
                client.doc.get("items", type=Map)[f"k{i}"] = i
            for client in clients:
                items: Map[int] = client.doc.get("items", type=Map)
                await wait_until(client.doc, lambda: len(items) == 20)  # noqa: B023
                assert dict(items) == {f"k{i}": i for i in range(20)}
        finally:
            for client in reversed(clients):
                await client.__aexit__(None, None, None)


async def test_a_new_client_receives_the_existing_document() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        async with AsyncWebSocketClient("r", host="127.0.0.1", port=server.port) as a:
            a.doc.get("text", type=Text).insert(0, "already there")
            async with AsyncWebSocketClient("r", host="127.0.0.1", port=server.port) as b:
                # Synchronized on entry: no waiting needed.
                assert b.synchronized.is_set()
                text = b.doc.get("text", type=Text)
                await wait_until(b.doc, lambda: str(text) == "already there")


async def test_rooms_are_isolated_by_id_and_closed_when_empty() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        async with (
            AsyncWebSocketClient("one", host="127.0.0.1", port=server.port) as a,
            AsyncWebSocketClient("two", host="127.0.0.1", port=server.port) as b,
            AsyncWebSocketClient("one", host="127.0.0.1", port=server.port) as c,
        ):
            assert set(server.room_manager.rooms) == {"one", "two"}
            a.doc.get("text", type=Text).insert(0, "for one")
            text_c = c.doc.get("text", type=Text)
            await wait_until(c.doc, lambda: str(text_c) == "for one")
            # Room two got nothing of room one, and room one gets nothing of room two: once
            # another client of room two (d) saw b's marker, and a round trip through room one
            # came after, room one's clients have no marker.
            async with AsyncWebSocketClient("two", host="127.0.0.1", port=server.port) as d:
                b.doc.get("marker", type=Text).insert(0, "x")
                marker_d = d.doc.get("marker", type=Text)
                await wait_until(d.doc, lambda: str(marker_d) == "x")
                assert str(d.doc.get("text", type=Text)) == ""
            a.doc.get("text", type=Text).insert(0, "again ")
            await wait_until(c.doc, lambda: str(text_c) == "again for one")
            assert str(b.doc.get("text", type=Text)) == ""
            for client in (a, c):
                assert str(client.doc.get("marker", type=Text)) == ""
        with fail_after(5):
            while server.room_manager.rooms:
                await wait_until_rooms_change(server)
        assert dict(server.room_manager.rooms) == {}


async def wait_until_rooms_change(server: AsyncWebSocketServer) -> None:
    # Rooms close through the room manager's own tasks; give them turns to run.
    from anyio import lowlevel

    await lowlevel.checkpoint()


async def test_room_id_is_the_percent_decoded_path_without_slash() -> None:
    ids: list[str] = []

    def factory(id: str) -> Room:
        ids.append(id)
        return Room(id)

    async with AsyncWebSocketServer(factory, host="127.0.0.1", port=0) as server:
        async with AsyncWebSocketClient("my id/é", host="127.0.0.1", port=server.port):
            assert ids == ["my id/é"]
            assert server.room_manager.rooms["my id/é"].id == "my id/é"


class SeededRoom(Room):
    """Starts a task that writes into the document before the room reports started."""

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        await self.task_group.start(self.seed)
        await super().run(task_status=task_status)

    async def seed(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        self.doc.get("text", type=Text).insert(0, f"seeded {self.id}")
        self.cancelled = Event()
        task_status.started()
        try:
            await sleep_forever()
        finally:
            self.cancelled.set()


async def test_a_room_task_runs_before_the_first_sync_and_is_cancelled_on_close() -> None:
    async with AsyncWebSocketServer(SeededRoom, host="127.0.0.1", port=0) as server:
        async with AsyncWebSocketClient("s", host="127.0.0.1", port=server.port) as client:
            # The first sync already carries the seed: no waiting.
            assert str(client.doc.get("text", type=Text)) == "seeded s"
            room = server.room_manager.rooms["s"]
            assert isinstance(room, SeededRoom)
        with fail_after(5):
            await room.cancelled.wait()


async def test_room_doc_is_synced_with_clients_both_ways() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        async with AsyncWebSocketClient("d", host="127.0.0.1", port=server.port) as client:
            room = server.room_manager.rooms["d"]
            client.doc.get("text", type=Text).insert(0, "from client")
            room_text = room.doc.get("text", type=Text)
            await wait_until(room.doc, lambda: str(room_text) == "from client")
            room.doc.get("array", type=Array).append("from room")
            client_array = client.doc.get("array", type=Array)
            await wait_until(client.doc, lambda: list(client_array) == ["from room"])


class ChainedRoom(Room):
    """Connects its document as a client of an upstream server."""

    upstream_port = 0

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        await self.task_group.start(self.connect_upstream)
        await super().run(task_status=task_status)

    async def connect_upstream(self, *, task_status: TaskStatus[None]) -> None:
        async with AsyncWebSocketClient(
            self.id, doc=self.doc, host="localhost", port=self.upstream_port
        ):
            task_status.started()
            await sleep_forever()


async def test_chained_servers_converge() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as upstream:
        ChainedRoom.upstream_port = upstream.port
        async with AsyncWebSocketServer(ChainedRoom, host="127.0.0.1", port=0) as downstream:
            async with (
                AsyncWebSocketClient("c", host="127.0.0.1", port=upstream.port) as up,
                AsyncWebSocketClient("c", host="127.0.0.1", port=downstream.port) as down,
            ):
                up.doc.get("text", type=Text).insert(0, "up ")
                down.doc.get("text", type=Text).insert(0, "down ")
                up_text, down_text = up.doc.get("text", type=Text), down.doc.get("text", type=Text)
                await wait_until(up.doc, lambda: len(str(up_text)) == 8)
                await wait_until(down.doc, lambda: str(down_text) == str(up_text))


async def test_manual_push_and_pull() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        async with (
            AsyncWebSocketClient("p", auto_push=False, host="127.0.0.1", port=server.port) as a,
            AsyncWebSocketClient("p", auto_pull=False, host="127.0.0.1", port=server.port) as b,
            AsyncWebSocketClient("p", host="127.0.0.1", port=server.port) as watcher,
        ):
            text_a = a.doc.get("text", type=Text)
            text_a += "one"
            text_a += " two"
            watched = watcher.doc.get("text", type=Text)
            # a's marker goes out after what a sent: had a pushed its edits, the watcher would
            # have them by now.
            await mark(a, watcher, "before push")
            assert str(watched) == ""
            a.push()
            await wait_until(watcher.doc, lambda: str(watched) == "one two")
            # b has received a's update, and applies nothing until it pulls.
            await mark(a, b, "after push")
            text_b = b.doc.get("text", type=Text)
            assert str(text_b) == ""
            pull = b.pull()
            assert str(text_b) == "one two"
            # Synchronized once the server answered the pull (a round trip, as in 0.7.1).
            await pull
            assert b.synchronized.is_set()


async def test_one_pull_applies_everything_pending() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        async with (
            AsyncWebSocketClient("p", host="127.0.0.1", port=server.port) as a,
            AsyncWebSocketClient("p", host="127.0.0.1", port=server.port) as c,
            AsyncWebSocketClient("p", auto_pull=False, host="127.0.0.1", port=server.port) as b,
        ):
            await check_one_pull_applies_everything(a, c, b)


class RecordingRoom(Room):
    """Records its native document when it closes (its last client has left)."""

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        self.closed = Event()
        try:
            await super().run(task_status=task_status)
        finally:
            self.final = self._core.state()
            self.closed.set()


def edit_and_leave(port: int, id: str, push: bool) -> None:
    with WebSocketClient(id, host="127.0.0.1", port=port) as client:
        client.pull()
        client.doc.get("text", type=Text).insert(0, "secret")
        if push:
            client.push()


async def test_the_blocking_client_sends_nothing_before_push() -> None:
    # Its default is auto_push=False. The room handles what a client sent before it handles
    # the client leaving: what the room holds when it closes is all the client sent.
    async with AsyncWebSocketServer(RecordingRoom, host="127.0.0.1", port=0) as server:
        for id, push in (("unpushed", False), ("pushed", True)):
            room = await server.room_manager.get_room(id)  # open until its client leaves
            assert isinstance(room, RecordingRoom)
            await to_thread.run_sync(edit_and_leave, server.port, id, push)
            with fail_after(10):
                await room.closed.wait()
            doc: Doc[Any] = Doc()
            doc.apply_update(room.final)
            assert str(doc.get("text", type=Text)) == ("secret" if push else "")


@pytest.mark.parametrize("scheme", ["ws", "http"])
async def test_host_may_carry_a_ws_or_http_scheme(scheme: str) -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        host = f"{scheme}://127.0.0.1"
        async with (
            AsyncWebSocketClient("h", host=host, port=server.port) as a,
            AsyncWebSocketClient("h", host=host, port=server.port) as b,
        ):
            a.doc.get("text", type=Text).insert(0, scheme)
            text = b.doc.get("text", type=Text)
            await wait_until(b.doc, lambda: str(text) == scheme)


class GatedRoom(Room):
    """A room that reports started (so that its first client is synced) once `gate` is set."""

    def __init__(self, id: str, gate: Event) -> None:
        super().__init__(id)
        self._gate = gate

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        await self._gate.wait()
        await super().run(task_status=task_status)


async def test_the_blocking_client_waits_without_the_gil() -> None:
    # A thread blocks in `pull()` (no sync before the room started), then in `wait()`, while
    # this thread runs Python: a wait holding the GIL would stop it until the wait times out.
    steps = 100_000
    progress = [0]
    seen: list[object] = []
    about_to_pull, about_to_wait = threading.Event(), threading.Event()
    gate = Event()

    def blocking(port: int) -> None:
        with WebSocketClient("gil", host="127.0.0.1", port=port) as client:
            about_to_pull.set()
            # `pull()` takes no timeout (the 0.7.1 API); its inner client's does: a pull that
            # held the GIL makes this test fail rather than hang.
            client._client.pull(timeout=20)
            seen.append(progress[0])
            about_to_wait.set()
            seen.append(client.wait(20))
            seen.append(progress[0])

    def run_python() -> None:
        for _ in range(steps):
            progress[0] += 1

    async with AsyncWebSocketServer(
        lambda id: GatedRoom(id, gate), host="127.0.0.1", port=0
    ) as server:
        thread = threading.Thread(target=blocking, args=(server.port,))
        thread.start()
        try:
            await to_thread.run_sync(about_to_pull.wait, 20)
            run_python()
            gate.set()  # the room starts: the client is synced
            await to_thread.run_sync(about_to_wait.wait, 20)
            run_python()
            async with AsyncWebSocketClient("gil", host="127.0.0.1", port=server.port) as w:
                w.doc.get("text", type=Text).insert(0, "wake up")
        finally:
            gate.set()
            await to_thread.run_sync(thread.join, 30)
    assert seen == [steps, True, 2 * steps]


async def test_an_edit_just_before_exit_reaches_the_server() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        async with AsyncWebSocketClient("e", host="127.0.0.1", port=server.port) as watcher:
            async with AsyncWebSocketClient("e", host="127.0.0.1", port=server.port) as writer:
                writer.doc.get("text", type=Text).insert(0, "last words")
            text = watcher.doc.get("text", type=Text)
            await wait_until(watcher.doc, lambda: str(text) == "last words")


async def test_an_external_doc_is_used_and_typed_get_works_positionally() -> None:
    doc: Doc[Any] = Doc()
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        async with AsyncWebSocketClient("x", doc=doc, host="127.0.0.1", port=server.port) as c:
            assert c.doc is doc
            async with AsyncWebSocketClient("x", host="127.0.0.1", port=server.port) as other:
                # Documents wiredb creates accept the type positionally.
                other.doc.get("t", Text).insert(0, "hi")  # type: ignore[call-arg]
                t = doc.get("t", type=Text)
                await wait_until(doc, lambda: str(t) == "hi")


async def test_port_zero_binds_a_free_port_and_a_busy_port_raises() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        assert server.port > 0
        with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1"):
            async with AsyncWebSocketServer(host="127.0.0.1", port=server.port):
                pass


async def test_connecting_to_nothing_raises_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError):
        async with AsyncWebSocketClient("x", host="127.0.0.1", port=port):
            pass


BLOCKING_CLIENT = textwrap.dedent(
    """
    import sys
    from pycrdt import Text
    from wire_websocket import WebSocketClient

    port, room, word, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with WebSocketClient(room, host="localhost", port=int(port)) as client:
        client.pull()
        text = client.doc.get("text", type=Text)
        text += word
        client.push()
        while len(str(text)) < expected:
            client.wait(5.0)
        print(str(text))
    """
)


async def test_blocking_clients_in_other_processes() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        async with AsyncWebSocketClient("b", host="127.0.0.1", port=server.port) as local:
            local.doc.get("text", type=Text).insert(0, "L")

            async def run(word: str) -> str:
                result = await to_thread.run_sync(
                    lambda: subprocess.run(
                        [sys.executable, "-c", BLOCKING_CLIENT, str(server.port), "b", word, "3"],
                        capture_output=True,
                        text=True,
                        timeout=60,
                    )
                )
                assert result.returncode == 0, result.stderr
                return result.stdout.strip()

            outputs: list[str] = []

            async def collect(word: str) -> None:
                outputs.append(await run(word))

            async with create_task_group() as tg:
                tg.start_soon(collect, "X")
                tg.start_soon(collect, "Y")
            assert len(outputs) == 2
            assert sorted(outputs[0]) == ["L", "X", "Y"]
            assert outputs[0] == outputs[1]
            text = local.doc.get("text", type=Text)
            await wait_until(local.doc, lambda: str(text) == outputs[0])


def test_blocking_client_against_a_server_in_another_process(tmp_path: Any) -> None:
    script = textwrap.dedent(
        """
        import anyio, sys
        from wire_websocket import AsyncWebSocketServer

        async def main():
            async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
                print(server.port, flush=True)
                await anyio.sleep_forever()

        anyio.run(main)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as server:
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            with WebSocketClient("w", host="localhost", port=port, auto_push=True) as a:
                a.pull()
                a.doc.get("text", type=Text).insert(0, "blocking")
                with WebSocketClient("w", host="localhost", port=port) as b:
                    b.pull()
                    text = b.doc.get("text", type=Text)
                    while str(text) != "blocking":
                        assert b.wait(5.0)
                    assert b.synchronized
        finally:
            server.terminate()
