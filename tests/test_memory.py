"""The memory wire: in-process clients of a server's rooms, and the cost of an edit."""

from __future__ import annotations

import pytest
from pycrdt import Map, Text

from helpers import wait_until
from wire_memory import AsyncMemoryClient, AsyncMemoryServer, Memory
from wiredb import AsyncChannel, AsyncClient

pytestmark = pytest.mark.anyio


async def edit_round(clients: list[AsyncMemoryClient], edit: str, editors: range) -> None:
    """Each editor in turn sets a key, and every client sees it before the next one edits."""
    for i in editors:
        clients[i].doc.get("edits", type=Map)[f"{edit}{i}"] = i
        for c in clients:
            edits: Map[int] = c.doc.get("edits", type=Map)
            await wait_until(c.doc, lambda: f"{edit}{i}" in edits)  # noqa: B023


async def test_one_edit_costs_n_messages_in_a_room_of_n() -> None:
    n = 5
    async with AsyncMemoryServer() as server:
        clients = [AsyncMemoryClient("lean", server=server) for _ in range(n)]
        for c in clients:
            await c.__aenter__()
        try:
            # Every handshake message is out of the way once everyone saw everyone's edit.
            await edit_round(clients, "warm", range(n))
            sent = [c.channel.send_nb for c in clients]
            received = [c.channel.receive_nb for c in clients]

            # One edit, then a round in which every client edits: whatever an edit sends as
            # a consequence (an echo to its sender, a client sending it back) is queued ahead
            # of the round's edits, so it is counted by the time the round has been seen.
            await edit_round(clients, "measured", range(1))
            await edit_round(clients, "barrier", range(n))

            sent_delta = [c.channel.send_nb - s for c, s in zip(clients, sent, strict=True)]
            received_delta = [
                c.channel.receive_nb - r for c, r in zip(clients, received, strict=True)
            ]
            # n + 1 edits: each went out once from its editor and came in once at the n - 1
            # others. The original's pattern is 2n per edit (echo to the sender, and every
            # receiver sending it back).
            assert sent_delta == [2] + [1] * (n - 1)
            assert received_delta == [n - 1] + [n] * (n - 1)
            assert sum(sent_delta) + sum(received_delta) == (n + 1) * n
        finally:
            for c in reversed(clients):
                await c.__aexit__(None, None, None)


async def test_a_memory_channel_is_an_async_channel_for_any_client() -> None:
    async with AsyncMemoryServer() as server:
        async with AsyncMemoryClient("plain", server=server) as wired:
            channel = await server.connect("plain")
            assert isinstance(channel, AsyncChannel)
            assert isinstance(channel, Memory)
            assert channel.id == "plain"
            try:
                async with AsyncClient(channel) as plain:
                    plain.doc.get("text", type=Text).insert(0, "by hand")
                    text = wired.doc.get("text", type=Text)
                    await wait_until(wired.doc, lambda: str(text) == "by hand")
            finally:
                channel.close()
            assert channel.send_nb >= 3  # step 1, step 2, the update
            with pytest.raises(ConnectionError):
                await channel.send(b"\x00\x02\x00")


async def test_a_malformed_frame_is_refused_and_the_room_goes_on() -> None:
    async with AsyncMemoryServer() as server:
        async with (
            AsyncMemoryClient("bad", server=server) as a,
            AsyncMemoryClient("bad", server=server) as b,
        ):
            channel = await server.connect("bad")
            try:
                with pytest.raises(ValueError):
                    # A sync update declaring 9 bytes and carrying 2.
                    await channel.send(b"\x00\x02\x09\x01\x02")
            finally:
                channel.close()
            a.doc.get("text", type=Text).insert(0, "fine")
            text = b.doc.get("text", type=Text)
            await wait_until(b.doc, lambda: str(text) == "fine")
