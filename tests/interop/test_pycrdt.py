"""pycrdt's own sync client (`pycrdt.Provider`, with the pycrdt under test) on wiredb's server,
and wiredb's clients through a pycrdt-websocket server (its own virtual environment)."""

from __future__ import annotations

import pytest
from anyio import to_thread
from pycrdt import Text

from helpers import wait_for_awareness, wait_until
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer, WebSocketClient

from .harness import pycrdt_client, pycrdt_websocket_server, yjs_client

pytestmark = pytest.mark.anyio

HOST = "127.0.0.1"


def has_all(text: str, parts: list[str]) -> bool:
    return all(part in text for part in parts)


async def test_pycrdt_providers_and_ours_converge_on_our_server() -> None:
    async with AsyncWebSocketServer(host=HOST, port=0) as server:
        url = f"ws://{HOST}:{server.port}"
        async with AsyncWebSocketClient("room", host=HOST, port=server.port) as ours:
            text = ours.doc.get("text", type=Text)
            text += "before"
            async with pycrdt_client(url, "room") as p1, pycrdt_client(url, "room") as p2:
                await p1.wait_for(lambda s: s["text"] == "before")
                await p2.wait_for(lambda s: s["text"] == "before")
                await p1.send("insert", value="<p1>")
                await p2.send("insert", value="<p2>")
                text.insert(0, "<ours>")
                parts = ["before", "<p1>", "<p2>", "<ours>"]
                await wait_until(ours.doc, lambda: has_all(str(text), parts))
                await p1.wait_for(lambda s: s["text"] == str(text))
                await p2.wait_for(lambda s: s["text"] == str(text))


async def test_our_clients_sync_through_a_pycrdt_websocket_server() -> None:
    async with pycrdt_websocket_server() as port:
        async with (
            AsyncWebSocketClient("room", host=HOST, port=port) as a,
            AsyncWebSocketClient("room", host=HOST, port=port) as b,
        ):
            ta, tb = a.doc.get("text", type=Text), b.doc.get("text", type=Text)
            ta += "<a>"
            tb += "<b>"

            def blocking_client() -> str:
                with WebSocketClient("room", host=HOST, port=port) as c:
                    c.pull()
                    tc = c.doc.get("text", type=Text)
                    tc.insert(0, "<c>")
                    c.push()
                    while not has_all(str(tc), ["<a>", "<b>"]):
                        assert c.wait(10), "the blocking client stopped hearing from the server"
                    return str(tc)

            seen_by_c = await to_thread.run_sync(blocking_client)
            parts = ["<a>", "<b>", "<c>"]
            await wait_until(a.doc, lambda: has_all(str(ta), parts))
            await wait_until(b.doc, lambda: str(tb) == str(ta))
            assert has_all(seen_by_c, ["<a>", "<b>", "<c>"])
            # A JavaScript client in the same pycrdt-websocket room sees the same document.
            async with yjs_client(f"ws://{HOST}:{port}", "room") as js:
                await js.wait_for(lambda s: s["synced"] and s["text"] == str(ta))


async def test_awareness_through_a_pycrdt_websocket_server() -> None:
    async with pycrdt_websocket_server() as port:
        async with AsyncWebSocketClient("room", host=HOST, port=port) as b:
            b_id = b.doc.client_id
            async with AsyncWebSocketClient("room", host=HOST, port=port) as a:
                a_id = a.doc.client_id
                # States set once both are there: pycrdt-websocket does not send a joiner the
                # states already known (it learns them at their next renewal, within 15 s).
                a.awareness.set_local_state({"user": "a"})
                b.awareness.set_local_state({"user": "b"})
                await wait_for_awareness(
                    a.awareness, lambda: a.awareness.states.get(b_id) == {"user": "b"}
                )
                await wait_for_awareness(
                    b.awareness, lambda: b.awareness.states.get(a_id) == {"user": "a"}
                )
            # pycrdt-websocket relays the null state a leaving client sends.
            await wait_for_awareness(b.awareness, lambda: a_id not in b.awareness.states)
