"""The original pure-Python wiredb 0.7.1 (with wire-websocket 0.7.1, in its own virtual
environment since it pins pycrdt<0.13): its clients on wiredb's server, and wiredb's clients on
its server."""

from __future__ import annotations

import pytest
from anyio import to_thread
from pycrdt import Text

from helpers import wait_until
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer, WebSocketClient

from .harness import wiredb071_client, wiredb071_server

pytestmark = pytest.mark.anyio

HOST = "127.0.0.1"


def has_all(text: str, parts: list[str]) -> bool:
    return all(part in text for part in parts)


async def test_original_clients_on_our_server() -> None:
    async with AsyncWebSocketServer(host=HOST, port=0) as server:
        port = server.port
        async with AsyncWebSocketClient("room", host=HOST, port=port) as ours:
            text = ours.doc.get("text", type=Text)
            text += "<ours>"
            async with (
                wiredb071_client("async", port, "room") as orig_async,
                wiredb071_client("sync", port, "room") as orig_sync,
            ):
                # Both synchronize with what the room had.
                await orig_async.wait_for(lambda s: s["text"] == "<ours>")
                await orig_sync.wait_for(lambda s: s["text"] == "<ours>")
                await orig_async.send("insert", value="<async>")
                await orig_sync.send("insert", value="<sync>")
                text.insert(0, "<ours2>")
                parts = ["<ours>", "<ours2>", "<async>", "<sync>"]
                await wait_until(ours.doc, lambda: has_all(str(text), parts))
                await orig_async.wait_for(lambda s: s["text"] == str(text))
                await orig_sync.poll_for(lambda s: s["text"] == str(text), "pull")


async def test_our_clients_on_the_original_server() -> None:
    async with wiredb071_server() as port:
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
            assert has_all(seen_by_c, parts)
            # An original client joining late gets the whole document from its server.
            async with wiredb071_client("async", port, "room") as orig:
                await orig.wait_for(lambda s: s["text"] == str(ta))
