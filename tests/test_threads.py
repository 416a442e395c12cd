"""Waiting costs no thread: clients and servers wait on eventfds in the event loop, and their
sockets are served by the one native runtime, whatever their number."""

from __future__ import annotations

import os
from contextlib import AsyncExitStack

import pytest
from pycrdt import Text

from helpers import wait_until
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer

pytestmark = pytest.mark.anyio


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


async def test_fifty_waiting_clients_start_no_thread() -> None:
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        async with AsyncWebSocketClient("room", host="127.0.0.1", port=server.port) as first:
            # The native runtime is up: from here on a thread per client would show.
            baseline = thread_count()
            async with AsyncExitStack() as stack:
                clients = [
                    await stack.enter_async_context(
                        AsyncWebSocketClient("room", host="127.0.0.1", port=server.port)
                    )
                    for _ in range(50)
                ]
                # Every one of them waits for updates, and gets them.
                first.doc.get("text", type=Text).insert(0, "hello")
                for client in clients:
                    text = client.doc.get("text", type=Text)
                    await wait_until(client.doc, lambda t=text: str(t) == "hello")  # type: ignore[misc]
                assert thread_count() == baseline
