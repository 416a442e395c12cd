"""The documented quickstart, verbatim but for the port."""

from __future__ import annotations

import pytest
from anyio import sleep
from pycrdt import Text

from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer

pytestmark = pytest.mark.anyio


async def test_quickstart() -> None:
    async with AsyncWebSocketServer(host="localhost", port=0) as server:
        port = server.port
        async with (
            AsyncWebSocketClient(host="localhost", port=port) as client0,
            AsyncWebSocketClient(host="localhost", port=port) as client1,
        ):
            text0 = client0.doc.get("text", Text)  # type: ignore[call-arg]
            text0 += "Hello, World!"
            await sleep(0.1)
            text1 = client1.doc.get("text", Text)  # type: ignore[call-arg]
            assert str(text1) == "Hello, World!"
