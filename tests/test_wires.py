"""What every in-process-served wire does alike: the memory wire and the pipe wire."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar

import pytest
from anyio import (
    TASK_STATUS_IGNORED,
    Event,
    create_task_group,
    fail_after,
    sleep_forever,
)
from anyio.abc import TaskStatus
from pycrdt import Map, Text

from helpers import wait_until
from marks import check_one_pull_applies_everything, mark
from wire_memory import AsyncMemoryClient, AsyncMemoryServer
from wire_pipe import AsyncPipeClient, AsyncPipeServer
from wiredb import AsyncClientMixin, Room

pytestmark = pytest.mark.anyio

Server = AsyncMemoryServer | AsyncPipeServer
Client = AbstractAsyncContextManager[AsyncClientMixin]


@pytest.fixture(params=["memory", "pipe"])
def wire(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def serve(
    wire: str, room_factory: Callable[[str], Room] = Room, **limits: int
) -> AsyncIterator[Server]:
    server: Server = (
        AsyncMemoryServer(room_factory, **limits)
        if wire == "memory"
        else AsyncPipeServer(room_factory, **limits)
    )
    async with server:
        yield server


async def client(server: Server, id: str, **options: Any) -> Client:
    """A client of room `id` (not entered yet)."""
    if isinstance(server, AsyncMemoryServer):
        return AsyncMemoryClient(id, server=server, **options)
    return AsyncPipeClient(id, connection=await server.connect(id), **options)


async def test_two_clients_converge_on_concurrent_edits(wire: str) -> None:
    async with serve(wire) as server:
        async with await client(server, "r") as a, await client(server, "r") as b:
            a.doc.get("text", type=Text).insert(0, "left ")
            b.doc.get("text", type=Text).insert(0, "right ")
            text_a, text_b = a.doc.get("text", type=Text), b.doc.get("text", type=Text)
            await wait_until(a.doc, lambda: len(str(text_a)) == 11)
            await wait_until(b.doc, lambda: str(text_b) == str(text_a))
            assert sorted(str(text_a).split()) == ["left", "right"]


async def test_ten_clients_converge(wire: str) -> None:
    async with serve(wire) as server:
        clients = [await client(server, "crowd") for _ in range(10)]
        entered: list[AsyncClientMixin] = []
        try:
            for c in clients:
                entered.append(await c.__aenter__())
            for i, e in enumerate(entered):
                e.doc.get("items", type=Map)[f"k{i}"] = i
            for e in entered:
                items: Map[int] = e.doc.get("items", type=Map)
                await wait_until(e.doc, lambda: len(items) == 10)  # noqa: B023
                assert dict(items) == {f"k{i}": i for i in range(10)}
        finally:
            for c in reversed(clients[: len(entered)]):
                await c.__aexit__(None, None, None)


async def test_manual_push_and_pull(wire: str) -> None:
    async with serve(wire) as server:
        async with (
            await client(server, "p", auto_push=False) as a,
            await client(server, "p", auto_pull=False) as b,
            await client(server, "p") as watcher,
        ):
            text_a = a.doc.get("text", type=Text)
            text_a += "one"
            text_a += " two"
            watched = watcher.doc.get("text", type=Text)
            # a's marker goes out after what a sent: had a pushed its edits, the watcher would
            # have them by now.
            await mark(a, watcher, "before push")
            assert str(watched) == ""
            # The watcher's edit makes a round trip to a (and b).
            watcher.doc.get("flag", type=Text).insert(0, "x")
            flag_a = a.doc.get("flag", type=Text)
            await wait_until(a.doc, lambda: str(flag_a) == "x")
            a.push()
            await wait_until(watcher.doc, lambda: str(watched) == "one two")
            # b has received everything (a's update, and the watcher's before its marker), and
            # applies nothing until it pulls; one pull applies it all.
            await mark(watcher, b, "flag sent")
            await mark(a, b, "pushed")
            text_b = b.doc.get("text", type=Text)
            assert str(text_b) == ""
            pull = b.pull()
            assert str(text_b) == "one two"
            assert str(b.doc.get("flag", type=Text)) == "x"
            # Synchronized once the server answered the pull (a round trip, as in 0.7.1).
            await pull
            assert b.synchronized.is_set()


async def test_one_pull_applies_everything_pending(wire: str) -> None:
    async with serve(wire) as server:
        async with (
            await client(server, "p") as a,
            await client(server, "p") as c,
            await client(server, "p", auto_pull=False) as b,
        ):
            await check_one_pull_applies_everything(a, c, b)


async def test_a_new_client_receives_the_existing_document(wire: str) -> None:
    async with serve(wire) as server:
        async with await client(server, "r") as a:
            a.doc.get("text", type=Text).insert(0, "already there")
            async with await client(server, "r") as b:
                assert b.synchronized.is_set()
                text = b.doc.get("text", type=Text)
                await wait_until(b.doc, lambda: str(text) == "already there")


async def test_an_edit_just_before_exit_reaches_the_others(wire: str) -> None:
    async with serve(wire) as server:
        async with await client(server, "e") as watcher:
            async with await client(server, "e") as writer:
                writer.doc.get("text", type=Text).insert(0, "last words")
            text = watcher.doc.get("text", type=Text)
            await wait_until(watcher.doc, lambda: str(text) == "last words")


class TrackedRoom(Room):
    """Writes into its document before reporting started; records its opening and closing."""

    opened: ClassVar[list[str]] = []

    async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        TrackedRoom.opened.append(self.id)
        self.closed = Event()
        await self.task_group.start(self.seed)
        await super().run(task_status=task_status)

    async def seed(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
        self.doc.get("text", type=Text).insert(0, f"seeded {self.id}")
        task_status.started()
        try:
            await sleep_forever()
        finally:
            self.closed.set()


async def test_rooms_open_before_the_first_sync_and_close_after_the_last_client(
    wire: str,
) -> None:
    TrackedRoom.opened = []
    async with serve(wire, TrackedRoom) as server:
        async with await client(server, "s") as a, await client(server, "s") as b:
            # The first sync carries the seed: no waiting.
            assert str(a.doc.get("text", type=Text)) == "seeded s"
            assert str(b.doc.get("text", type=Text)) == "seeded s"
            room = server.room_manager.rooms["s"]
            assert isinstance(room, TrackedRoom)
        with fail_after(5):
            await room.closed.wait()
        # A later client gets a fresh room (once the old one is gone).
        async with await client(server, "s") as c:
            assert str(c.doc.get("text", type=Text)) == "seeded s"
        assert TrackedRoom.opened == ["s", "s"]


async def test_get_room_and_clients_share_one_room(wire: str) -> None:
    TrackedRoom.opened = []
    async with serve(wire, TrackedRoom) as server:
        room = await server.room_manager.get_room("g")
        assert await server.room_manager.get_room("g") is room
        async with await client(server, "g") as c:
            assert server.room_manager.rooms["g"] is room
            c.doc.get("more", type=Text).insert(0, "from client")
            more = room.doc.get("more", type=Text)
            await wait_until(room.doc, lambda: str(more) == "from client")
        assert TrackedRoom.opened == ["g"]
        # Asked for by id, the room stayed open until a client came and left.
        assert isinstance(room, TrackedRoom)
        with fail_after(5):
            await room.closed.wait()


async def test_a_room_that_fails_to_open_refuses_its_client(wire: str) -> None:
    def broken(id: str) -> Room:
        raise RuntimeError("no room today")

    async with serve(wire, broken) as server:
        with pytest.raises(ConnectionError):
            async with await client(server, "x"):
                pass


async def test_leaving_the_server_ends_its_clients(wire: str) -> None:
    server_gone = Event()

    async def hold(c: Client, *, task_status: TaskStatus[AsyncClientMixin]) -> None:
        async with c as entered:
            task_status.started(entered)
            await server_gone.wait()
            # The server is gone: so is the client's connection.
            await entered._client._closed.wait()

    with fail_after(10):
        async with create_task_group() as tg:
            async with serve(wire) as server:
                entered = await tg.start(hold, await client(server, "end"))
                entered.doc.get("text", type=Text).insert(0, "bye")
            server_gone.set()


async def test_an_update_beyond_the_room_quota_is_refused(wire: str) -> None:
    async with serve(wire, max_document_bytes=4096) as server:
        async with await client(server, "q") as watcher, await client(server, "q") as writer:
            writer.doc.get("small", type=Text).insert(0, "fits")
            small = watcher.doc.get("small", type=Text)
            await wait_until(watcher.doc, lambda: str(small) == "fits")
            writer.doc.get("big", type=Text).insert(0, "x" * 10_000)
            # The writer's connection ends; the room and its other clients go on.
            with fail_after(5):
                await writer._client._closed.wait()
            assert str(watcher.doc.get("big", type=Text)) == ""
            async with await client(server, "q") as later:
                assert str(later.doc.get("small", type=Text)) == "fits"
                assert str(later.doc.get("big", type=Text)) == ""
