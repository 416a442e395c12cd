"""Who may connect and what they may do: the authorization hook (allow, read-only, deny), its
timeout and the caps on what a connection sends before it is decided, the origin allow-list,
signed tokens, read-only connections, kick and revoke, and shutdown."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from anyio import (
    TASK_STATUS_IGNORED,
    CancelScope,
    Event,
    create_task_group,
    fail_after,
    get_cancelled_exc_class,
    get_running_tasks,
    sleep,
    sleep_forever,
    to_thread,
)
from anyio.abc import TaskStatus
from pycrdt import Doc, Text
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from helpers import wait_for_awareness, wait_until
from wire_file import FileClient, file_room_factory
from wire_websocket import (
    Allow,
    AsyncWebSocketClient,
    AsyncWebSocketServer,
    Deny,
    ReadOnly,
    Request,
    mint_token,
)
from wiredb import Room
from wiredb._wiredb import mint_token as native_mint_token

pytestmark = pytest.mark.anyio

SECRET = b"0123456789abcdef0123456789abcdef"


def by_role(requests: list[Request] | None = None) -> Callable[[Request], Any]:
    """A hook letting in `?role=editor` read-write, `?role=viewer` read-only, others not."""

    async def authorize(request: Request) -> Allow | ReadOnly | Deny:
        if requests is not None:
            requests.append(request)
        role = request.query.get("role", [""])[0]
        name = request.query.get("name", [None])[0]
        if role == "editor":
            return Allow(identity=name)
        if role == "viewer":
            return ReadOnly(identity=name)
        return Deny(4403, "who are you?")

    return authorize


def close_code(
    port: int, path: str, send: list[bytes] | None = None, after: threading.Event | None = None
) -> int | None:
    """Connects, sends frames (once `after` is set, if given), reads until closed; the close
    code."""
    with connect(f"ws://127.0.0.1:{port}{path}", open_timeout=10) as ws:
        if after is not None:
            assert after.wait(10)
        try:
            for frame in send or []:
                ws.send(frame)
            while True:
                ws.recv(timeout=30)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
    return None


def frames_until_close(port: int, path: str) -> tuple[list[bytes], int | None]:
    """The frames a connection is sent until it is closed, and the close code."""
    frames: list[bytes] = []
    with connect(f"ws://127.0.0.1:{port}{path}", open_timeout=10) as ws:
        try:
            while True:
                frame = ws.recv(timeout=30)
                assert isinstance(frame, bytes)
                frames.append(frame)
        except ConnectionClosed as closed:
            return frames, closed.rcvd.code if closed.rcvd else None


def update_frame(text: str, doc: Doc[Any] | None = None) -> bytes:
    """A y-protocols update message inserting `text`."""
    doc = Doc() if doc is None else doc
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(event.update))
    doc.get("text", type=Text).insert(0, text)
    doc.unobserve(subscription)
    update = updates[0]
    return b"\x00\x02" + varuint(len(update)) + update


def varuint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


READ_ONLY_NOTICE = b"\x02\x00\x09read-only"
EDITOR = {"role": "editor"}
VIEWER = {"role": "viewer"}


async def test_allow_read_only_and_deny_with_close_codes() -> None:
    opened: list[str] = []

    def room_factory(id: str) -> Room:
        opened.append(id)
        return Room(id)

    requests: list[Request] = []
    async with AsyncWebSocketServer(
        room_factory, host="127.0.0.1", port=0, authorize=by_role(requests)
    ) as server:
        port = server.port
        # Denied: closed with the hook's code, before any room was opened for it.
        assert await to_thread.run_sync(close_code, port, "/a%20room?role=nobody") == 4403
        assert opened == []
        request = requests[0]
        assert (request.path, request.room) == ("/a%20room", "a room")
        assert request.query == {"role": ["nobody"]}
        assert request.peer[0] == "127.0.0.1"
        with pytest.raises(ConnectionError, match="who are you"):
            async with AsyncWebSocketClient("a room", host="127.0.0.1", port=port):
                pass

        async with AsyncWebSocketClient(
            "a room",
            host="127.0.0.1",
            port=port,
            cookies={"session": "s3cr3t"},
            params={"role": "editor", "name": "ed"},
        ) as editor:
            assert not editor.read_only
            assert requests[-1].cookies == {"session": "s3cr3t"}
            assert requests[-1].headers["cookie"] == "session=s3cr3t"
            editor.doc.get("text", type=Text).insert(0, "by the editor")
            await editor.wait_sent()
            async with AsyncWebSocketClient(
                "a room", host="127.0.0.1", port=port, params=VIEWER
            ) as viewer:
                text = viewer.doc.get("text", type=Text)
                assert str(text) == "by the editor"
                # Told with a y-protocols permission-denied message.
                await wait_until(viewer.doc, lambda: viewer.read_only)
            assert opened == ["a room"]
            # The raw messages: sync step 1, then the notice.
            frames, _ = await to_thread.run_sync(read_first_frames, port, "/a%20room?role=viewer")
            assert frames[1] == READ_ONLY_NOTICE
        [connection] = [r for r in requests if r.query.get("name") == ["ed"]]
        assert connection.room == "a room"


def read_first_frames(port: int, path: str) -> tuple[list[bytes], None]:
    with connect(f"ws://127.0.0.1:{port}{path}", open_timeout=10) as ws:
        frames = [ws.recv(timeout=10), ws.recv(timeout=10)]
    return [bytes(f) if isinstance(f, bytes) else f.encode() for f in frames], None


async def test_a_thousand_read_only_updates_leave_the_document_byte_identical() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0, authorize=by_role()) as server:
        port = server.port
        async with (
            AsyncWebSocketClient("r", host="127.0.0.1", port=port, params=EDITOR) as editor,
            AsyncWebSocketClient("r", host="127.0.0.1", port=port, params=VIEWER) as viewer,
        ):
            editor_text = editor.doc.get("text", type=Text)
            editor_text += "kept"
            viewer_text = viewer.doc.get("text", type=Text)
            await wait_until(viewer.doc, lambda: str(viewer_text) == "kept")
            room = server.room_manager.rooms["r"]
            before = room._core.state()
            for i in range(1000):
                viewer_text.insert(0, f"<{i}>")
            # Then a marker the server relays (awareness works for viewers): once the editor
            # sees it, the server has handled every update sent before it.
            viewer.awareness.set_local_state({"after": 1000})
            await wait_for_awareness(
                editor.awareness,
                lambda: editor.awareness.states.get(viewer.doc.client_id) == {"after": 1000},
            )
            assert room._core.state() == before
            assert str(editor_text) == "kept"
            # The viewer still gets live updates.
            editor_text += "!"
            await wait_until(viewer.doc, lambda: str(viewer_text).endswith("kept!"))
            assert room._core.state() != before


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def settle(predicate: Callable[[], bool], timeout: float = 10) -> None:
    """Waits until resources released elsewhere (native threads, the kernel) are released."""
    with fail_after(timeout):
        while not predicate():
            await sleep(0.01)


async def test_a_hook_that_never_answers_is_cut_at_its_timeout() -> None:
    calls: list[str] = []

    async def never(request: Request) -> Allow:
        calls.append(request.room)
        await sleep_forever()
        raise AssertionError

    async with AsyncWebSocketServer(
        host="127.0.0.1", port=0, authorize=never, auth_timeout=0.3
    ) as server:
        tasks = len(get_running_tasks())
        # Warm up: the first connection may allocate what the runtime keeps for later.
        assert await to_thread.run_sync(close_code, server.port, "/warm") == 1013
        await settle(lambda: len(get_running_tasks()) <= tasks)
        fds = open_fds()
        codes = [await to_thread.run_sync(close_code, server.port, f"/r{i}") for i in range(5)]
        assert codes == [1013] * 5
        assert calls == ["warm", "r0", "r1", "r2", "r3", "r4"]
        assert server.room_manager.rooms == {}
        # Every hook task was cancelled and every socket closed.
        await settle(lambda: open_fds() <= fds and len(get_running_tasks()) <= tasks)


class Marks:
    """Request ids noted by a hook, and a way to wait until there are so many."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self._changed = Event()

    def add(self, id: int) -> None:
        self.ids.append(id)
        self._changed.set()
        self._changed = Event()

    async def wait_for(self, count: int, timeout: float = 10) -> None:
        with fail_after(timeout):
            while len(self.ids) < count:
                await self._changed.wait()


async def test_a_flood_during_a_slow_hook_is_closed_at_the_cap() -> None:
    release = Event()
    asked, cancelled, answered = Marks(), Marks(), Marks()
    hooked = threading.Event()

    async def slow(request: Request) -> Allow:
        asked.add(request.id)
        hooked.set()
        try:
            await release.wait()
        except get_cancelled_exc_class():
            cancelled.add(request.id)
            raise
        answered.add(request.id)
        return Allow()

    async with AsyncWebSocketServer(
        host="127.0.0.1",
        port=0,
        authorize=slow,
        auth_timeout=30,
        max_pending_messages=8,
        max_pending_bytes=1 << 16,
    ) as server:

        async def once_hooked(path: str, frames: list[bytes]) -> int | None:
            """Sends `frames` once the hook runs for the connection; its close code."""
            hooked.clear()
            return await to_thread.run_sync(close_code, server.port, path, frames, hooked)

        flood = [update_frame(f"x{i}") for i in range(100)]
        tasks = len(get_running_tasks())
        # Warm up: the first connection may allocate what the runtime keeps for later.
        assert await once_hooked("/warm", flood) == 1008
        await cancelled.wait_for(1)
        await settle(lambda: len(get_running_tasks()) <= tasks)
        fds = open_fds()

        assert await once_hooked("/r", flood) == 1008
        big = [b"\x00\x02" + varuint(70_000) + bytes(70_000)]
        assert await once_hooked("/r", big) == 1008
        # The hooks of the closed connections are cancelled, long before their 30 s timeout
        # and before `release` lets them answer.
        await cancelled.wait_for(3)
        assert sorted(cancelled.ids) == sorted(asked.ids)
        release.set()
        assert answered.ids == []
        # Nothing was let in: no room exists; every hook task and socket is gone.
        assert server.room_manager.rooms == {}
        assert server.connections("r") == []
        await settle(lambda: open_fds() <= fds and len(get_running_tasks()) <= tasks)


async def test_a_client_gone_during_the_hook_cancels_it() -> None:
    asked, cancelled = Marks(), Marks()

    async def slow(request: Request) -> Allow:
        asked.add(request.id)
        try:
            await sleep_forever()
        except get_cancelled_exc_class():
            cancelled.add(request.id)
            raise
        raise AssertionError

    async with AsyncWebSocketServer(
        host="127.0.0.1", port=0, authorize=slow, auth_timeout=30
    ) as server:
        done = threading.Event()

        def leave_once_asked() -> None:
            with connect(f"ws://127.0.0.1:{server.port}/r", open_timeout=10):
                done.wait(30)

        thread = threading.Thread(target=leave_once_asked)
        thread.start()
        try:
            await asked.wait_for(1)
        finally:
            done.set()
            await to_thread.run_sync(thread.join, 10)
        await cancelled.wait_for(1)
        assert cancelled.ids == asked.ids
        assert server.room_manager.rooms == {}


async def test_what_is_sent_before_the_decision_is_handled_once_let_in() -> None:
    asked, release = Event(), Event()

    async def slow(request: Request) -> Allow:
        asked.set()
        await release.wait()
        return Allow()

    async with AsyncWebSocketServer(host="127.0.0.1", port=0, authorize=slow) as server:
        done = threading.Event()

        def early_edit() -> None:
            with connect(f"ws://127.0.0.1:{server.port}/r", open_timeout=10) as ws:
                ws.send(update_frame("sent before the decision"))
                done.wait(30)

        thread = threading.Thread(target=early_edit)
        thread.start()
        try:
            with fail_after(10):
                await asked.wait()
            release.set()
            async with AsyncWebSocketClient("r", host="127.0.0.1", port=server.port) as reader:
                text = reader.doc.get("text", type=Text)
                await wait_until(reader.doc, lambda: str(text) == "sent before the decision")
        finally:
            done.set()
            await to_thread.run_sync(thread.join, 10)


async def test_origins_not_allowed_are_refused_during_the_handshake() -> None:
    asked: list[Request] = []

    async def authorize(request: Request) -> Allow:
        asked.append(request)
        return Allow()

    async with AsyncWebSocketServer(
        host="127.0.0.1", port=0, allowed_origins=["https://app.example"], authorize=authorize
    ) as server:

        def with_origin(origin: str) -> int:
            try:
                with connect(
                    f"ws://127.0.0.1:{server.port}/r", origin=Origin(origin), open_timeout=10
                ) as ws:
                    # Let in: the room sends its sync step 1.
                    ws.recv(timeout=10)
                    return 101
            except InvalidStatus as refused:
                return refused.response.status_code

        assert await to_thread.run_sync(with_origin, "https://evil.example") == 403
        # Checked natively, before the hook: the hook never heard of it.
        assert asked == []
        assert server.room_manager.rooms == {}
        assert await to_thread.run_sync(with_origin, "https://app.example") == 101
        assert [r.headers["origin"] for r in asked] == ["https://app.example"]
        assert await to_thread.run_sync(with_origin, "null") == 403
        assert len(asked) == 1
        # Not a browser (no Origin header): not concerned.
        async with AsyncWebSocketClient("r", host="127.0.0.1", port=server.port):
            pass
        assert len(asked) == 2


async def test_tokens_accepted_expired_and_tampered_ones_refused() -> None:
    async with AsyncWebSocketServer(
        host="127.0.0.1", port=0, token_secret=SECRET, auth_timeout=1
    ) as server:
        port = server.port
        writer_token = mint_token(SECRET, "doc", subject="writer")
        async with (
            AsyncWebSocketClient("doc", host="127.0.0.1", port=port, token=writer_token) as w,
            AsyncWebSocketClient(
                "doc",
                host="127.0.0.1",
                port=port,
                token=lambda: mint_token(SECRET, "doc", read_only=True),
                token_in="query",
            ) as r,
        ):
            assert not w.read_only
            await wait_until(r.doc, lambda: r.read_only)
            w.doc.get("text", type=Text).insert(0, "signed")
            text = r.doc.get("text", type=Text)
            await wait_until(r.doc, lambda: str(text) == "signed")
            [writer, reader] = sorted(server.connections("doc"), key=lambda c: c.read_only)
            assert (writer.identity, writer.read_only) == ("writer", False)
            assert reader.read_only

        expired = native_mint_token(SECRET, "doc", False, int(time.time()) - 1)
        header, _, signature = mint_token(SECRET, "doc", read_only=True).split(".")
        _, writable, _ = mint_token(SECRET, "doc").split(".")
        forged = f"{header}.{writable}.{signature}"
        refused = {
            "expired": expired,
            "tampered": forged,
            "another room": mint_token(SECRET, "other"),
            "another secret": mint_token(b"x" * 32, "doc"),
            "garbage": "not.a.token",
        }
        for name, token in refused.items():
            client = AsyncWebSocketClient("doc", host="127.0.0.1", port=port, token=token)
            with pytest.raises(ConnectionError):
                async with client:
                    pass
            assert client.close_reason is not None, name
            assert client.close_reason[0] == 4401, (name, client.close_reason)
        # No token: refused as soon as the first frame is not a token message; a client that
        # sends nothing at all is closed at the deadline.
        step1 = b"\x00\x00\x01\x00"
        assert await to_thread.run_sync(close_code, port, "/doc", [step1]) == 4401
        assert await to_thread.run_sync(close_code, port, "/doc") == 1008


async def test_a_token_or_the_hook() -> None:
    async with AsyncWebSocketServer(
        host="127.0.0.1", port=0, token_secret=SECRET, authorize=by_role()
    ) as server:
        port = server.port
        token = mint_token(SECRET, "r", read_only=True)
        async with AsyncWebSocketClient("r", host="127.0.0.1", port=port, token=token) as a:
            await wait_until(a.doc, lambda: a.read_only)
        async with AsyncWebSocketClient("r", host="127.0.0.1", port=port, params=EDITOR) as b:
            assert not b.read_only
        # A bad token is refused, whatever the hook would say.
        bad = "x.y.z"
        assert await to_thread.run_sync(close_code, port, f"/r?role=editor&token={bad}") == 4401


class Sender:
    """Sends a new update every millisecond (in a thread) until stopped or closed: `sent`
    counts the updates sent, `code` is the close code the server sent, if it did."""

    def __init__(self, port: int, path: str) -> None:
        self.url = f"ws://127.0.0.1:{port}{path}"
        self.sent = 0
        self.code: int | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def __enter__(self) -> Sender:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(10)

    async def join(self) -> None:
        await to_thread.run_sync(self.thread.join, 10)
        assert not self.thread.is_alive()

    def _run(self) -> None:
        doc: Doc[Any] = Doc()
        with connect(self.url, open_timeout=10) as ws:
            try:
                while not self.stop.is_set():
                    ws.send(update_frame(f"[{self.sent}]", doc))
                    self.sent += 1
                    try:
                        ws.recv(timeout=0.001)
                    except TimeoutError:
                        pass
                # A clean close: the server answers once it has read everything before it.
                ws.close()
            except ConnectionClosed as closed:
                self.code = closed.rcvd.code if closed.rcvd else None


async def test_kick_takes_effect_before_the_call_returns() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0, authorize=by_role()) as server:
        port = server.port
        bob_params = {"role": "editor", "name": "bob"}
        async with AsyncWebSocketClient("r", host="127.0.0.1", port=port, params=bob_params) as bob:
            text = bob.doc.get("text", type=Text)
            with Sender(port, "/r?role=editor&name=mallory") as mallory:
                await wait_until(bob.doc, lambda: str(text).count("[") >= 20)
                room = server.room_manager.rooms["r"]
                closed = server.close_connections(
                    "r", lambda c: c.identity == "mallory", code=4001, reason="bye"
                )
                frozen = room._core.state()
                assert closed == 1
                # Mallory goes on sending until it reads the close frame: none of it counts.
                await mallory.join()
            assert mallory.code == 4001
            assert room._core.state() == frozen
            assert [c.identity for c in server.connections("r")] == ["bob"]


async def test_revoke_makes_connections_read_only_before_the_call_returns() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0, authorize=by_role()) as server:
        port = server.port
        bob_params = {"role": "editor", "name": "bob"}
        async with AsyncWebSocketClient("r", host="127.0.0.1", port=port, params=bob_params) as bob:
            text = bob.doc.get("text", type=Text)
            with Sender(port, "/r?role=editor&name=eve") as eve:
                await wait_until(bob.doc, lambda: str(text).count("[") >= 20)
                room = server.room_manager.rooms["r"]
                changed = server.set_read_only("r", lambda c: c.identity == "eve")
                frozen = room._core.state()
                revoked_at = eve.sent
                assert changed == 1
                [who] = [c for c in server.connections("r") if c.identity == "eve"]
                assert who.read_only
                # Eve goes on sending, then closes: the server read all of it, applied none.
                await settle(lambda: eve.sent >= revoked_at + 50)
                eve.stop.set()
                await eve.join()
            assert eve.code is None, "closed by eve, not by the server"
            assert room._core.state() == frozen
            # Bob is still a writer; closing everyone (no predicate) closes him.
            assert server.close_connections("r") == 1


async def test_shutdown_with_connected_clients_loses_nothing(tmp_path: Path) -> None:
    stop, stopped = Event(), Event()

    async def serve(*, task_status: TaskStatus[int]) -> None:
        rooms = file_room_factory(tmp_path)
        async with AsyncWebSocketServer(rooms, host="127.0.0.1", port=0) as server:
            task_status.started(server.port)
            await stop.wait()
        stopped.set()

    async with create_task_group() as task_group:
        port = await task_group.start(serve)
        async with AsyncWebSocketClient(
            "doc", host="127.0.0.1", port=port, reconnect=False
        ) as client:
            text = client.doc.get("text", type=Text)
            text.insert(0, "async client|")
            await client.wait_sent()
            with Sender(port, "/doc") as sender:
                await wait_until(client.doc, lambda: str(text).count("[") > 50)
                # Leave the server while both are connected and one is still sending.
                stop.set()
                with fail_after(20):
                    await stopped.wait()
                await sender.join()
            assert sender.code == 1001
            assert client.close_reason is not None and client.close_reason[0] == 1001
    with FileClient(path=tmp_path / "doc_updates.y") as stored:
        stored.pull()
        kept = str(stored.doc.get("text", type=Text))
    # Everything sent before the close frame was read, applied and stored.
    assert "async client|" in kept
    assert sender.sent > 50
    missing = [i for i in range(sender.sent) if f"[{i}]" not in kept]
    assert missing == []


async def test_edits_dropped_while_read_only_get_in_once_read_write_again() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0, authorize=by_role()) as server:
        port = server.port
        async with (
            AsyncWebSocketClient("r", host="127.0.0.1", port=port, params=EDITOR) as watcher,
            AsyncWebSocketClient(
                "r", host="127.0.0.1", port=port, params={"role": "editor", "name": "ro"}
            ) as client,
        ):
            assert server.set_read_only("r", lambda c: c.identity == "ro") == 1
            # The notice is queued before this edit of the watcher's: once it arrives, so did
            # the notice.
            watcher.doc.get("marks", type=Text).insert(0, "m")
            marks = client.doc.get("marks", type=Text)
            await wait_until(client.doc, lambda: str(marks) == "m")
            assert client.read_only
            room = server.room_manager.rooms["r"]
            before_marks = room._core.state()
            client.doc.get("text", type=Text).insert(0, "written while read-only")
            await client.wait_sent()
            # Sent, and dropped: a later marker from the same connection shows the room has
            # handled it (awareness works while read-only).
            client.awareness.set_local_state({"done": True})
            await wait_for_awareness(
                watcher.awareness,
                lambda: watcher.awareness.states.get(client.doc.client_id) == {"done": True},
            )
            before = room._core.state()
            assert before == before_marks
            # Made read-write again: the room asks for what it dropped, and gets it.
            assert server.set_read_only("r", lambda c: c.identity == "ro", read_only=False) == 1
            text = watcher.doc.get("text", type=Text)
            await wait_until(watcher.doc, lambda: str(text) == "written while read-only")
            assert room._core.state() != before


def attempt(port: int, path: str) -> str | int | None:
    """Tries to connect: "refused" if no WebSocket opened, else the close code it got."""
    try:
        return close_code(port, path)
    except (OSError, InvalidHandshake):
        return "refused"


async def test_shutdown_stops_accepting() -> None:
    opened: list[str] = []
    exiting, proceed = Event(), Event()

    class SlowToClose(Room):
        async def run(self, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
            try:
                await super().run(task_status=task_status)
            finally:
                # Holds the server's exit here, after its clients were closed.
                with CancelScope(shield=True):
                    exiting.set()
                    await proceed.wait()

    def room_factory(id: str) -> Room:
        opened.append(id)
        return SlowToClose(id)

    stop, stopped = Event(), Event()

    async def serve(*, task_status: TaskStatus[int]) -> None:
        async with AsyncWebSocketServer(room_factory, host="127.0.0.1", port=0) as server:
            task_status.started(server.port)
            await stop.wait()
        stopped.set()

    async with create_task_group() as task_group:
        port = await task_group.start(serve)
        async with AsyncWebSocketClient("doc", host="127.0.0.1", port=port, reconnect=False):
            stop.set()
            with fail_after(20):
                await exiting.wait()
            # The server is leaving its context: a newcomer gets no room.
            assert not stopped.is_set()
            assert await to_thread.run_sync(attempt, port, "/during") in ("refused", 1001)
            proceed.set()
            with fail_after(20):
                await stopped.wait()
        # And once it has left, nothing listens.
        assert await to_thread.run_sync(attempt, port, "/after") == "refused"
    assert opened == ["doc"]
