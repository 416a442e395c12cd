"""JavaScript Yjs peers (yjs 13, y-websocket's `WebsocketProvider` over `ws`, and the reference
Node server @y/websocket-server 0.1.1) with wiredb's server and clients, awareness included."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from anyio import create_task_group, to_thread
from pycrdt import Text

from helpers import wait_for_awareness, wait_until
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer, WebSocketClient, mint_token

from .harness import State, free_port, yjs_client, yjs_server

pytestmark = pytest.mark.anyio

HOST = "127.0.0.1"


def text_is(expected: str) -> Callable[[State], bool]:
    return lambda state: bool(state["synced"]) and state["text"] == expected


def has_all(text: str, parts: list[str]) -> bool:
    return all(part in text for part in parts)


async def test_yjs_clients_and_ours_converge_on_our_server() -> None:
    async with AsyncWebSocketServer(host=HOST, port=0) as server:
        url = f"ws://{HOST}:{server.port}"
        async with (
            yjs_client(url, "room") as js1,
            yjs_client(url, "room") as js2,
            AsyncWebSocketClient("room", host=HOST, port=server.port) as ours,
        ):
            await js1.wait_for(text_is(""))
            await js2.wait_for(text_is(""))
            text = ours.doc.get("text", type=Text)
            # Concurrent edits: nobody waits for anybody's before making its own.
            await js1.send("insert", value="<js1>")
            await js2.send("insert", value="<js2>")
            text.insert(0, "<ours>")
            parts = ["<js1>", "<js2>", "<ours>"]
            await wait_until(ours.doc, lambda: has_all(str(text), parts))
            await js1.wait_for(lambda s: has_all(s["text"], parts))
            await js2.wait_for(lambda s: has_all(s["text"], parts))
            assert js1.state["text"] == js2.state["text"] == str(text)
            assert len(str(text)) == sum(map(len, parts))

            # A blocking client joining late gets the converged document.
            def late_join() -> str:
                with WebSocketClient("room", host=HOST, port=server.port) as late:
                    late.pull()
                    return str(late.doc.get("text", type=Text))

            assert await to_thread.run_sync(late_join) == str(text)


@pytest.mark.parametrize("server_kind", ["wiredb", "reference"])
async def test_room_names_with_spaces_and_non_ascii_match_between_js_and_python(
    server_kind: str,
) -> None:
    room = "a room/é"

    async def scenario(port: int, server: AsyncWebSocketServer | None = None) -> None:
        async with (
            yjs_client(f"ws://{HOST}:{port}", room) as js,
            AsyncWebSocketClient(room, host=HOST, port=port) as ours,
        ):
            text = ours.doc.get("text", type=Text)
            text += "same room"
            await js.wait_for(text_is("same room"))
            if server is not None:
                assert list(server.room_manager.rooms) == [room]

    if server_kind == "wiredb":
        async with AsyncWebSocketServer(host=HOST, port=0) as server:
            await scenario(server.port, server)
    else:
        async with yjs_server() as port:
            await scenario(port)


async def test_a_yjs_client_that_reconnects_resyncs_both_ways() -> None:
    async with AsyncWebSocketServer(host=HOST, port=0) as server:
        url = f"ws://{HOST}:{server.port}"
        async with (
            yjs_client(url, "room") as js,
            AsyncWebSocketClient("room", host=HOST, port=server.port) as ours,
        ):
            text = ours.doc.get("text", type=Text)
            text += "hello"
            await js.wait_for(text_is("hello"))
            await js.send("disconnect")
            await js.wait_for(lambda s: s["status"] == "disconnected")
            # Edits on both sides while apart.
            text += " world"
            await js.send("insert", index=0, value="> ")
            await js.send("connect")
            expected = "> hello world"
            await js.wait_for(text_is(expected))
            await wait_until(ours.doc, lambda: str(text) == expected)


async def test_a_yjs_client_resyncs_with_a_restarted_server() -> None:
    port = free_port()
    async with yjs_client(f"ws://{HOST}:{port}", "room") as js:
        async with AsyncWebSocketServer(host=HOST, port=port):
            await js.wait_for(text_is(""))
            await js.send("insert", value="kept by the client")
            async with AsyncWebSocketClient("room", host=HOST, port=port) as ours:
                await wait_until(ours.doc, lambda: "kept" in str(ours.doc.get("text", type=Text)))
        await js.wait_for(lambda s: s["status"] == "disconnected")
        # A new server on the same port: its room starts empty, and the client that comes back
        # fills it with what it has.
        async with AsyncWebSocketServer(host=HOST, port=port):
            await js.wait_for(lambda s: s["status"] == "connected" and s["synced"])
            async with AsyncWebSocketClient("room", host=HOST, port=port) as ours:
                text = ours.doc.get("text", type=Text)
                await wait_until(ours.doc, lambda: str(text) == "kept by the client")


async def test_our_clients_sync_through_the_reference_yjs_server() -> None:
    async with yjs_server() as port:
        async with (
            yjs_client(f"ws://{HOST}:{port}", "room") as js,
            AsyncWebSocketClient("room", host=HOST, port=port) as a,
            AsyncWebSocketClient("room", host=HOST, port=port) as b,
        ):
            ta, tb = a.doc.get("text", type=Text), b.doc.get("text", type=Text)
            await js.wait_for(lambda s: bool(s["synced"]))
            await js.send("insert", value="<js>")
            ta.insert(0, "<a>")
            tb.insert(0, "<b>")

            def blocking_client() -> str:
                with WebSocketClient("room", host=HOST, port=port) as c:
                    c.pull()
                    tc = c.doc.get("text", type=Text)
                    tc += "<c>"
                    c.push()
                    while not has_all(str(tc), ["<js>", "<a>", "<b>", "<c>"]):
                        assert c.wait(10), "the blocking client stopped hearing from the server"
                    return str(tc)

            async with create_task_group() as tg:
                result: list[str] = []

                async def run_blocking() -> None:
                    result.append(await to_thread.run_sync(blocking_client))

                tg.start_soon(run_blocking)
            parts = ["<js>", "<a>", "<b>", "<c>"]
            await wait_until(a.doc, lambda: has_all(str(ta), parts))
            await wait_until(b.doc, lambda: has_all(str(tb), parts))
            state = await js.wait_for(lambda s: has_all(s["text"], parts))
            assert str(ta) == str(tb) == state["text"]
            assert has_all(result[0], parts)


def others(client: AsyncWebSocketClient) -> dict[int, Any]:
    """The awareness states of everyone but the client itself."""
    own = client.doc.client_id
    return {id: state for id, state in client.awareness.states.items() if id != own}


@pytest.mark.parametrize("server_kind", ["wiredb", "reference"])
async def test_awareness_between_yjs_and_python_clients(server_kind: str) -> None:
    if server_kind == "wiredb":
        async with AsyncWebSocketServer(host=HOST, port=0) as server:
            await awareness_scenario(server.port)
    else:
        async with yjs_server() as port:
            await awareness_scenario(port)


async def awareness_scenario(port: int) -> None:
    url = f"ws://{HOST}:{port}"
    async with (
        AsyncWebSocketClient("room", host=HOST, port=port) as ours,
        yjs_client(url, "room") as leaver,
        yjs_client(url, "room") as killed,
    ):
        ours.awareness.set_local_state({"user": "py", "cursor": 0})
        await leaver.send("awareness", state={"user": "js-leaver", "cursor": 3})
        await killed.send("awareness", state={"user": "js-killed", "cursor": 7})
        leaver_id = (await leaver.wait_for(lambda s: bool(s["synced"])))["clientID"]
        killed_id = (await killed.wait_for(lambda s: bool(s["synced"])))["clientID"]

        # A JavaScript client's cursor reaches the Python client, and the reverse.
        expected = {
            leaver_id: {"user": "js-leaver", "cursor": 3},
            killed_id: {"user": "js-killed", "cursor": 7},
        }
        await wait_for_awareness(ours.awareness, lambda: others(ours) == expected)
        own = str(ours.doc.client_id)
        await leaver.wait_for(lambda s: s["awareness"].get(own) == {"user": "py", "cursor": 0})

        ours.awareness.set_local_state({"user": "py", "cursor": 5})
        await leaver.wait_for(lambda s: s["awareness"].get(own) == {"user": "py", "cursor": 5})

        # A client that closes, and one that is killed: their states go, well before the
        # 30 s after which a silent client is dropped.
        await leaver.send("exit")
        await wait_for_awareness(ours.awareness, lambda: leaver_id not in others(ours))
        killed.kill()
        await wait_for_awareness(ours.awareness, lambda: killed_id not in others(ours), 15)
        assert others(ours) == {}

    # And the Python client leaving is seen by a JavaScript one.
    async with yjs_client(url, "room") as js:
        async with AsyncWebSocketClient("room", host=HOST, port=port) as ours:
            ours.awareness.set_local_state({"user": "py"})
            own = str(ours.doc.client_id)
            await js.wait_for(lambda s: s["awareness"].get(own) == {"user": "py"})
        await js.wait_for(lambda s: own not in s["awareness"])


async def test_yjs_clients_with_tokens_in_params_read_only_or_not() -> None:
    secret = b"an interop secret of some length"
    async with AsyncWebSocketServer(host=HOST, port=0, token_secret=secret) as server:
        url = f"ws://{HOST}:{server.port}"
        editor = {"token": mint_token(secret, "room", subject="js editor")}
        viewer = {"token": mint_token(secret, "room", read_only=True, subject="js viewer")}
        async with (
            yjs_client(url, "room", editor) as js_editor,
            yjs_client(url, "room", viewer) as js_viewer,
            AsyncWebSocketClient(
                "room", host=HOST, port=server.port, token=mint_token(secret, "room")
            ) as ours,
        ):
            await js_editor.wait_for(text_is(""))
            await js_viewer.wait_for(text_is(""))
            identities = {c.identity: c.read_only for c in server.connections("room")}
            assert identities == {"js editor": False, "js viewer": True, None: False}
            await js_viewer.send("insert", value="<viewer>")
            await js_editor.send("insert", value="<editor>")
            text = ours.doc.get("text", type=Text)
            await wait_until(ours.doc, lambda: "<editor>" in str(text))
            # A marker after the viewer's edit: awareness, which a viewer may send.
            await js_viewer.send("awareness", state={"after": "edit"})
            await wait_for_awareness(
                ours.awareness,
                lambda: {"after": "edit"} in ours.awareness.states.values(),
            )
            assert "<viewer>" not in str(text)
            await js_editor.wait_for(lambda s: s["text"] == str(text))
            # The viewer keeps its own edit locally (Yjs does) and gets the editor's.
            await js_viewer.wait_for(lambda s: "<editor>" in s["text"])

        # A y-websocket client without a token is refused (and retries, refused again).
        async with yjs_client(url, "room") as anonymous:
            await anonymous.wait_for(lambda s: s["status"] == "disconnected")
            assert not anonymous.state["synced"]
