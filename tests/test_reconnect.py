"""Clients that come back: reconnection after a lost connection or a server restart, with the
edits made meanwhile merged both ways."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from anyio import Event, create_task_group, fail_after, sleep
from anyio.abc import TaskGroup, TaskStatus
from pycrdt import Map, Text

from helpers import StatusLog, TcpProxy, wait_for_awareness, wait_until
from wire_file import FileClient, file_room_factory
from wire_memory import AsyncMemoryClient, AsyncMemoryServer
from wire_pipe import AsyncPipeClient, AsyncPipeServer
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer
from wiredb import ConnectionStatus, Reconnect, Room

pytestmark = pytest.mark.anyio

#: Quick retries, so that tests do not wait on the default backoff.
FAST = Reconnect(initial_delay=0.02, max_delay=0.2)


async def wait_sent(client: AsyncWebSocketClient) -> None:
    with fail_after(10):
        await client.wait_sent()
    assert not client.unsent


CONNECTED = ConnectionStatus.CONNECTED
CONNECTING = ConnectionStatus.CONNECTING
DISCONNECTED = ConnectionStatus.DISCONNECTED


async def test_a_client_comes_back_after_a_dropped_connection_with_its_offline_edits() -> None:
    async with (
        AsyncWebSocketServer(host="127.0.0.1", port=0) as server,
        TcpProxy(server.port) as proxy,
        AsyncWebSocketClient("r", host="127.0.0.1", port=proxy.port, reconnect=FAST) as a,
        AsyncWebSocketClient("r", host="127.0.0.1", port=server.port) as b,
    ):
        log = StatusLog(a)
        assert a.status is CONNECTED and a.synchronized.is_set()
        text_a, text_b = a.doc.get("text", type=Text), b.doc.get("text", type=Text)
        text_a += "online "
        await wait_until(b.doc, lambda: str(text_b) == "online ")
        assert not a.unsent

        proxy.refusing = True
        proxy.drop()
        seen = await log.wait_for(DISCONNECTED)
        assert not a.synchronized.is_set()
        # Both sides edit while apart.
        text_a += "offline-a "
        b.doc.get("items", type=Map)["from_b"] = 1
        text_b.insert(0, "b ")
        assert a.unsent
        # It keeps trying (the proxy refuses), and stays disconnected meanwhile.
        seen = await log.wait_for(CONNECTING, seen)
        seen = await log.wait_for(DISCONNECTED, seen)

        proxy.refusing = False
        await log.wait_for(CONNECTED, seen)
        with fail_after(10):
            await a.synchronized.wait()
        merged = "b online offline-a "
        await wait_until(a.doc, lambda: str(text_a) == merged)
        await wait_until(b.doc, lambda: str(text_b) == merged)
        items_a: Map[int] = a.doc.get("items", type=Map)
        await wait_until(a.doc, lambda: dict(items_a) == {"from_b": 1})
        await wait_sent(a)
        assert a.status is CONNECTED
        log.close()


async def test_a_silently_dead_connection_is_noticed_and_replaced() -> None:
    # Short keepalive settings: the proxy turning into a blackhole is noticed within a second
    # or two, not a minute.
    async with (
        AsyncWebSocketServer(host="127.0.0.1", port=0) as server,
        TcpProxy(server.port) as proxy,
        AsyncWebSocketClient(
            "r",
            host="127.0.0.1",
            port=proxy.port,
            reconnect=FAST,
            ping_interval=0.2,
            idle_timeout=1.5,
        ) as a,
        AsyncWebSocketClient("r", host="127.0.0.1", port=server.port) as b,
    ):
        text_a, text_b = a.doc.get("text", type=Text), b.doc.get("text", type=Text)
        text_a += "online "
        await wait_until(b.doc, lambda: str(text_b) == "online ")
        log = StatusLog(a)

        # Nothing goes through and nothing is closed: only the keepalive can tell.
        proxy.blackhole()
        seen = await log.wait_for(DISCONNECTED)
        code, reason = a.close_reason or (0, "")
        assert code == 1006, reason
        assert not a.synchronized.is_set()
        text_a += "cut-off-a "
        text_b.insert(0, "b ")
        assert a.unsent
        # An attempt into the blackhole gives up too (the handshake is never answered).
        seen = await log.wait_for(CONNECTING, seen)
        seen = await log.wait_for(DISCONNECTED, seen)

        proxy.restore()
        await log.wait_for(CONNECTED, seen)
        with fail_after(10):
            await a.synchronized.wait()
        merged = "b online cut-off-a "
        await wait_until(a.doc, lambda: str(text_a) == merged)
        await wait_until(b.doc, lambda: str(text_b) == merged)
        await wait_sent(a)
        log.close()


@pytest.mark.parametrize(
    ("ping_interval", "idle_timeout"),
    [(0, 10), (-1, 10), (1, float("inf")), (float("nan"), 10), (10, 10), (10, 5)],
)
def test_keepalive_settings_are_checked(ping_interval: float, idle_timeout: float) -> None:
    with pytest.raises(ValueError):
        AsyncWebSocketClient(
            host="localhost", port=1, ping_interval=ping_interval, idle_timeout=idle_timeout
        )


class ServerTask:
    """A server run by a task of its own, so that it can stop and start again under clients
    that stay open."""

    def __init__(self, task_group: TaskGroup, room_factory: Callable[[str], Room]) -> None:
        self._task_group = task_group
        self._room_factory = room_factory
        self._stop = Event()
        self._stopped = Event()
        self.port = 0

    async def start(self) -> None:
        self._stop, self._stopped = Event(), Event()
        self.port = await self._task_group.start(self._run, self.port)

    async def stop(self) -> None:
        self._stop.set()
        await self._stopped.wait()

    async def _run(self, port: int, *, task_status: TaskStatus[int]) -> None:
        try:
            async with AsyncWebSocketServer(self._room_factory, host="127.0.0.1", port=port) as s:
                task_status.started(s.port)
                await self._stop.wait()
        finally:
            self._stopped.set()


async def test_a_client_comes_back_after_the_server_restarts(tmp_path: Path) -> None:
    async with create_task_group() as task_group:
        server = ServerTask(task_group, file_room_factory(tmp_path))
        await server.start()
        port = server.port
        async with AsyncWebSocketClient(
            "notes", host="127.0.0.1", port=port, reconnect=FAST
        ) as client:
            log = StatusLog(client)
            text = client.doc.get("text", type=Text)
            text += "before "
            await wait_sent(client)
            await server.stop()
            await log.wait_for(DISCONNECTED)
            text += "while the server was down"
            assert client.unsent
            await server.start()
            await log.wait_for(CONNECTED)
            with fail_after(10):
                await client.synchronized.wait()
            await wait_sent(client)
            async with AsyncWebSocketClient("notes", host="127.0.0.1", port=port) as other:
                other_text = other.doc.get("text", type=Text)
                # The store had "before"; the returning client brought the rest.
                await wait_until(
                    other.doc, lambda: str(other_text) == "before while the server was down"
                )
                other_text += "!"
                await wait_until(client.doc, lambda: str(text).endswith("!"))
        await server.stop()
    # And the restarted server stored it all.
    with FileClient(path=tmp_path / "notes_updates.y") as stored:
        stored.pull()
        assert str(stored.doc.get("text", type=Text)) == "before while the server was down!"


async def test_awareness_is_announced_again_after_reconnecting() -> None:
    async with (
        AsyncWebSocketServer(host="127.0.0.1", port=0) as server,
        TcpProxy(server.port) as proxy,
        AsyncWebSocketClient("r", host="127.0.0.1", port=proxy.port, reconnect=FAST) as a,
        AsyncWebSocketClient("r", host="127.0.0.1", port=server.port) as b,
    ):
        a_id = a.doc.client_id
        a.awareness.set_local_state({"user": "alice"})
        await wait_for_awareness(b.awareness, lambda: a_id in b.awareness.states)
        b.awareness.set_local_state({"user": "bob"})
        await wait_for_awareness(a.awareness, lambda: b.doc.client_id in a.awareness.states)

        log = StatusLog(a)
        proxy.drop()
        # The server tells b that a left; a forgets the peers it can no longer hear.
        await wait_for_awareness(b.awareness, lambda: a_id not in b.awareness.states)
        await log.wait_for(CONNECTED)
        await wait_for_awareness(
            b.awareness, lambda: b.awareness.states.get(a_id) == {"user": "alice"}
        )
        await wait_for_awareness(
            a.awareness, lambda: a.awareness.states.get(b.doc.client_id) == {"user": "bob"}
        )


async def test_reconnecting_again_and_again_leaks_no_descriptor() -> None:
    async with (
        AsyncWebSocketServer(host="127.0.0.1", port=0) as server,
        TcpProxy(server.port) as proxy,
        AsyncWebSocketClient("r", host="127.0.0.1", port=proxy.port, reconnect=FAST) as a,
    ):
        log = StatusLog(a)
        seen = 0
        fds = None
        for i in range(6):
            proxy.drop()
            seen = await log.wait_for(DISCONNECTED, seen)
            seen = await log.wait_for(CONNECTED, seen)
            if i == 0:
                fds = open_fds()
        # Each lost connection's socket and eventfd are closed, in Rust and in Python.
        with fail_after(10):
            while open_fds() > (fds or 0):
                await sleep(0.01)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_reconnecting_can_be_turned_off() -> None:
    async with (
        AsyncWebSocketServer(host="127.0.0.1", port=0) as server,
        TcpProxy(server.port) as proxy,
        AsyncWebSocketClient("r", host="127.0.0.1", port=proxy.port, reconnect=False) as a,
    ):
        log = StatusLog(a)
        proxy.drop()
        await log.wait_for(DISCONNECTED)
        code, _ = a.close_reason or (0, "")
        assert code == 1006
        a.doc.get("text", type=Text).insert(0, "never sent")
        assert a.unsent
        assert log.seen == [DISCONNECTED]


async def test_giving_up_after_max_attempts() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        async with TcpProxy(server.port) as proxy:
            policy = Reconnect(initial_delay=0.01, max_delay=0.02, max_attempts=3)
            async with AsyncWebSocketClient(
                "r", host="127.0.0.1", port=proxy.port, reconnect=policy
            ) as a:
                log = StatusLog(a)
                proxy.refusing = True
                proxy.drop()
                with fail_after(10):
                    await a._client._closed.wait()
                assert log.seen.count(CONNECTING) == 3
                assert a.status is DISCONNECTED


async def test_the_first_connection_failing_raises_even_with_reconnect() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        async with TcpProxy(server.port) as proxy:
            proxy.refusing = True
            with pytest.raises(ConnectionError):
                async with AsyncWebSocketClient("r", host="127.0.0.1", port=proxy.port):
                    pass


def test_backoff_grows_is_capped_and_jittered() -> None:
    policy = Reconnect(initial_delay=0.1, max_delay=2.0, factor=2.0, jitter=0.5)
    for attempt, base in [(0, 0.1), (1, 0.2), (3, 0.8), (5, 2.0), (1000, 2.0)]:
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(base * 0.5 <= d <= base for d in delays), (attempt, min(delays), max(delays))
        assert len(set(delays)) > 1, "jittered"
    assert Reconnect(jitter=0).delay(2) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        Reconnect(initial_delay=5, max_delay=1)


async def test_unsent_and_wait_sent_on_the_pipe_and_memory_wires() -> None:
    async with AsyncPipeServer() as pipes, AsyncMemoryServer() as memory:
        async with (
            AsyncPipeClient("p", connection=await pipes.connect("p")) as piped,
            AsyncMemoryClient("m", server=memory) as in_memory,
        ):
            for client in (piped, in_memory):
                text = client.doc.get("text", type=Text)
                for i in range(100):
                    text += f"{i} "
                with fail_after(10):
                    await client.wait_sent()
                assert not client.unsent
            # Read back through the rooms: everything arrives.
            for room in (pipes.room_manager.rooms["p"], memory.room_manager.rooms["m"]):
                room_text = room.doc.get("text", type=Text)
                await wait_until(room.doc, lambda: "99 " in str(room_text))  # noqa: B023
