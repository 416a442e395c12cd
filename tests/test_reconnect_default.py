"""The default reconnect policy is real: a client given no `reconnect=` comes back after its
connection is dropped, with the edits made meanwhile."""

from __future__ import annotations

import pytest
from anyio import fail_after
from pycrdt import Text

from helpers import StatusLog, TcpProxy, wait_until
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer
from wiredb import ConnectionStatus

pytestmark = pytest.mark.anyio


async def test_a_client_reconnects_by_default_after_a_dropped_connection() -> None:
    async with (
        AsyncWebSocketServer(host="127.0.0.1", port=0) as server,
        TcpProxy(server.port) as proxy,
        AsyncWebSocketClient("r", host="127.0.0.1", port=proxy.port) as a,
        AsyncWebSocketClient("r", host="127.0.0.1", port=server.port) as b,
    ):
        log = StatusLog(a)
        text_a, text_b = a.doc.get("text", type=Text), b.doc.get("text", type=Text)
        text_a += "before "
        await wait_until(b.doc, lambda: str(text_b) == "before ")

        proxy.drop()
        seen = await log.wait_for(ConnectionStatus.DISCONNECTED)
        text_a += "while away"
        # The default policy's first delay is 0.1 s (jittered): back well within the bound.
        await log.wait_for(ConnectionStatus.CONNECTED, seen, timeout=20)
        with fail_after(10):
            await a.synchronized.wait()
        await wait_until(b.doc, lambda: str(text_b) == "before while away")
        assert a.status is ConnectionStatus.CONNECTED
        log.close()
