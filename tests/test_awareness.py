"""Awareness between wiredb's own clients: states set, seen, updated, and gone when their
client leaves, closed or killed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest
from anyio import open_process
from anyio.streams.buffered import BufferedByteReceiveStream

from helpers import wait_for_awareness
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer
from wiredb import Doc

pytestmark = pytest.mark.anyio

HOST = "127.0.0.1"


def others(client: AsyncWebSocketClient) -> dict[int, Any]:
    own = client.doc.client_id
    return {id: state for id, state in client.awareness.states.items() if id != own}


async def test_states_reach_the_others_and_leave_with_their_client() -> None:
    async with AsyncWebSocketServer(host=HOST, port=0) as server:
        port = server.port
        async with AsyncWebSocketClient("r", host=HOST, port=port) as a:
            a.awareness.set_local_state({"user": "a", "cursor": 1})
            async with AsyncWebSocketClient("r", host=HOST, port=port) as b:
                b.awareness.set_local_state({"user": "b"})
                a_id, b_id = a.doc.client_id, b.doc.client_id
                await wait_for_awareness(
                    b.awareness, lambda: others(b) == {a_id: a.awareness.get_local_state()}
                )
                await wait_for_awareness(a.awareness, lambda: others(a) == {b_id: {"user": "b"}})
                a.awareness.set_local_state_field("cursor", 2)
                await wait_for_awareness(b.awareness, lambda: others(b)[a_id]["cursor"] == 2)

                # A client that looks at the awareness only once in the room still gets the
                # states that were there when it joined.
                async with AsyncWebSocketClient("r", host=HOST, port=port) as c:
                    await wait_for_awareness(
                        c.awareness,
                        lambda: (
                            others(c) == {a_id: {"user": "a", "cursor": 2}, b_id: {"user": "b"}}
                        ),
                    )
                    c_id = c.doc.client_id
                    await wait_for_awareness(a.awareness, lambda: c_id in others(a))
                await wait_for_awareness(a.awareness, lambda: c_id not in others(a))
            await wait_for_awareness(a.awareness, lambda: others(a) == {})


async def test_a_state_set_to_none_is_removed_for_the_others() -> None:
    async with AsyncWebSocketServer(host=HOST, port=0) as server:
        async with (
            AsyncWebSocketClient("r", host=HOST, port=server.port) as a,
            AsyncWebSocketClient("r", host=HOST, port=server.port) as b,
        ):
            a.awareness.set_local_state({"here": True})
            await wait_for_awareness(b.awareness, lambda: a.doc.client_id in others(b))
            a.awareness.set_local_state(None)
            await wait_for_awareness(b.awareness, lambda: a.doc.client_id not in others(b))
            # And back.
            a.awareness.set_local_state({"here": "again"})
            await wait_for_awareness(
                b.awareness, lambda: others(b).get(a.doc.client_id) == {"here": "again"}
            )


async def test_many_updates_before_first_use_are_asked_for_again() -> None:
    # A rate limit that lets every update through.
    async with AsyncWebSocketServer(host=HOST, port=0, max_awareness_per_second=1000) as server:
        async with (
            AsyncWebSocketClient("r", host=HOST, port=server.port) as busy,
            AsyncWebSocketClient("r", host=HOST, port=server.port) as late,
        ):
            # More awareness updates than a client keeps before its awareness is first used.
            for cursor in range(400):
                busy.awareness.set_local_state({"cursor": cursor})
            async with AsyncWebSocketClient("r", host=HOST, port=server.port) as probe:
                await wait_for_awareness(
                    probe.awareness,
                    lambda: others(probe).get(busy.doc.client_id) == {"cursor": 399},
                )
            # `late` has been receiving all along without using its awareness.
            await wait_for_awareness(
                late.awareness, lambda: others(late).get(busy.doc.client_id) == {"cursor": 399}
            )


CLIENT = textwrap.dedent(
    """
    import sys
    import anyio
    from wire_websocket import AsyncWebSocketClient

    async def main(port):
        async with AsyncWebSocketClient("r", host="127.0.0.1", port=port) as client:
            client.awareness.set_local_state({"user": "doomed"})
            print(client.doc.client_id, flush=True)
            await anyio.sleep_forever()

    anyio.run(main, int(sys.argv[1]))
    """
)


async def test_a_killed_client_s_state_is_removed_at_once() -> None:
    async with AsyncWebSocketServer(host=HOST, port=0) as server:
        async with AsyncWebSocketClient("r", host=HOST, port=server.port) as watcher:
            watcher.awareness.set_local_state({"user": "watcher"})
            command = [sys.executable, "-c", CLIENT, str(server.port)]
            async with await open_process(command, stderr=subprocess.STDOUT) as process:
                assert process.stdout is not None
                line = await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 100)
                doomed = int(line)
                await wait_for_awareness(
                    watcher.awareness, lambda: others(watcher).get(doomed) == {"user": "doomed"}
                )
                process.kill()
                await process.wait()
            # Gone as soon as the server sees the connection drop, not after 30 s of silence.
            await wait_for_awareness(watcher.awareness, lambda: doomed not in others(watcher), 10)


def test_the_awareness_is_bound_to_the_client_s_document() -> None:
    doc = Doc()
    client = AsyncWebSocketClient("r", doc=doc, host=HOST, port=1)
    assert client.awareness.client_id == doc.client_id
    assert client.awareness is client.awareness
    assert client.awareness.get_local_state() == {}
    # Docs wiredb creates draw 32-bit client IDs, as Yjs does (see `wiredb._doc`).
    assert 0 < doc.client_id < 2**32
