"""The edges of the y-websocket protocol, both ways: frames holding several messages, auth and
query-awareness messages, unknown message types, and an update that cannot be decoded."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from anyio import to_thread
from pycrdt import Doc, Encoder, Text, create_sync_message, read_message
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import Server, ServerConnection, serve

from helpers import wait_for_awareness, wait_until
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer

pytestmark = pytest.mark.anyio

HOST = "127.0.0.1"


def buf(data: bytes) -> bytes:
    """A lib0 var-length buffer."""
    encoder = Encoder()
    encoder.write_var_uint(len(data))
    return encoder.to_bytes() + data


def update_message(update: bytes) -> bytes:
    return b"\x00\x02" + buf(update)


def step2_message(update: bytes) -> bytes:
    return b"\x00\x01" + buf(update)


def awareness_message(client_id: int, clock: int, state: str) -> bytes:
    encoder = Encoder()
    for value in (1, client_id, clock):
        encoder.write_var_uint(value)
    encoder.write_var_string(state)
    return b"\x01" + buf(encoder.to_bytes())


AUTH_DENIED = b"\x02\x00" + buf(b"read-only")
QUERY_AWARENESS = b"\x03"
UNKNOWN_TYPES = [b"\x09", b"\x7f\x01\x02\x03", b"\x80\x01\x05"]


def edit(text: str) -> bytes:
    doc: Doc[Any] = Doc()
    doc.get("text", type=Text).insert(0, text)
    return doc.get_update()


def receive_until(ws: ClientConnection | ServerConnection, prefix: bytes) -> bytes:
    """Receives messages until one starts with `prefix`."""
    while True:
        message = ws.recv(timeout=10)
        if isinstance(message, bytes) and message.startswith(prefix):
            return message


async def test_a_frame_holding_several_messages_is_handled_whole() -> None:
    async with AsyncWebSocketServer(host=HOST, port=0) as server:
        async with (
            AsyncWebSocketClient("r", host=HOST, port=server.port) as ours,
            AsyncWebSocketClient("r", host=HOST, port=server.port) as witness,
        ):
            ours.awareness.set_local_state({"user": "ours"})
            # Once another client has it, the room has it.
            own = ours.doc.client_id
            await wait_for_awareness(witness.awareness, lambda: own in witness.awareness.states)

            def raw_client() -> bytes:
                with connect(f"ws://{HOST}:{server.port}/r") as ws:
                    frame = (
                        create_sync_message(Doc())
                        + update_message(edit("several"))
                        + awareness_message(77, 1, '{"user":"raw"}')
                        + QUERY_AWARENESS
                    )
                    ws.send(frame)
                    receive_until(ws, b"\x00\x01")  # the step 2 answering our step 1
                    # The answer to the query holds every state: ours and the raw client's.
                    while True:
                        answer = receive_until(ws, b"\x01")
                        if b"ours" in answer and b"raw" in answer:
                            return answer

            added: list[int] = []
            ours.awareness.observe(lambda topic, event: added.extend(event[0]["added"]))
            await to_thread.run_sync(raw_client)
            text = ours.doc.get("text", type=Text)
            await wait_until(ours.doc, lambda: str(text) == "several")
            # The raw client's state came, and went with it.
            await wait_for_awareness(ours.awareness, lambda: 77 not in ours.awareness.states)
            assert 77 in added


async def test_auth_and_unknown_messages_from_a_client_are_ignored() -> None:
    async with AsyncWebSocketServer(host=HOST, port=0) as server:
        async with AsyncWebSocketClient("r", host=HOST, port=server.port) as ours:

            def raw_client() -> None:
                with connect(f"ws://{HOST}:{server.port}/r") as ws:
                    ws.send(AUTH_DENIED)
                    for message in UNKNOWN_TYPES:
                        ws.send(message)
                    # A known message followed by an unknown one in the same frame.
                    ws.send(update_message(edit("kept")) + b"\x63\x00")
                    ws.send(create_sync_message(Doc()))
                    # Still connected: the step 1 sent after all of it is answered.
                    receive_until(ws, b"\x00\x01")

            await to_thread.run_sync(raw_client)
            text = ours.doc.get("text", type=Text)
            await wait_until(ours.doc, lambda: str(text) == "kept")


async def test_edits_sent_before_the_step2_that_holds_their_predecessors_are_kept() -> None:
    # A client back with offline edits may type before its sync step 2 went out: its next
    # updates start beyond what the room has. They wait in the room, and converge once the
    # step 2 arrives; the connection stays open.
    offline: Doc[Any] = Doc()
    text = offline.get("text", type=Text)
    text += "written offline, "
    before = offline.get_state()
    text += "then typed "
    first = offline.get_update(before)
    middle = offline.get_state()
    text += "after reconnecting"
    second = offline.get_update(middle)
    async with AsyncWebSocketServer(host=HOST, port=0) as server:
        async with AsyncWebSocketClient("r", host=HOST, port=server.port) as ours:

            def raw_client() -> None:
                with connect(f"ws://{HOST}:{server.port}/r") as ws:
                    ws.send(update_message(second))
                    ws.send(update_message(first))
                    ws.send(step2_message(offline.get_update()))
                    ws.send(create_sync_message(Doc()))
                    # Still connected: the step 1 sent after all of it is answered.
                    receive_until(ws, b"\x00\x01")

            await to_thread.run_sync(raw_client)
            ours_text = ours.doc.get("text", type=Text)
            expected = str(text)
            await wait_until(ours.doc, lambda: str(ours_text) == expected)


async def test_a_bad_update_ends_only_its_connection_with_a_log_line_naming_the_room(
    capfd: pytest.CaptureFixture[str],
) -> None:
    async with AsyncWebSocketServer(host=HOST, port=0) as server:
        port = server.port
        async with (
            AsyncWebSocketClient("room-of-the-bad-update", host=HOST, port=port) as a,
            AsyncWebSocketClient("room-of-the-bad-update", host=HOST, port=port) as b,
        ):

            def bad_client() -> int | None:
                with connect(f"ws://{HOST}:{port}/room-of-the-bad-update") as ws:
                    ws.send(update_message(b"\x01\x02\x03"))
                    try:
                        while True:
                            ws.recv(timeout=10)
                    except ConnectionClosed as closed:
                        return closed.rcvd.code if closed.rcvd else None

            assert await to_thread.run_sync(bad_client) == 1007
            a.doc.get("text", type=Text).insert(0, "unaffected")
            text_b = b.doc.get("text", type=Text)
            await wait_until(b.doc, lambda: str(text_b) == "unaffected")
    # Native log lines go to stderr (level from WIREDB_LOG, warnings by default).
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "room-of-the-bad-update" in line]
    assert lines, err
    assert "closing connection" in lines[0]


@contextmanager
def fake_server(handler: object) -> Iterator[int]:
    """A y-websocket server played by hand on a thread; yields its port."""
    server: Server = serve(handler, HOST, 0)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.socket.getsockname()[1])
    finally:
        server.shutdown()
        thread.join(10)


async def test_our_client_handles_auth_query_unknown_and_packed_frames_from_a_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: dict[str, bytes] = {}
    got_update = threading.Event()

    def handler(ws: ServerConnection) -> None:
        try:
            seen["announced"] = receive_until(ws, b"\x01")
            ws.send(QUERY_AWARENESS)
            seen["answered"] = receive_until(ws, b"\x01")
            ws.send(AUTH_DENIED)
            for message in UNKNOWN_TYPES:
                ws.send(message)
            # Step 1 and step 2 in one frame, then a frame ending with an unknown type.
            ws.send(create_sync_message(Doc()) + step2_message(edit("served")))
            ws.send(awareness_message(5, 1, '{"user":"server"}') + b"\x63")
            seen["step2"] = receive_until(ws, b"\x00\x01")
            seen["update"] = receive_until(ws, b"\x00\x02")
            got_update.set()
        except ConnectionClosed:
            pass

    with caplog.at_level(logging.WARNING, logger="wiredb"), fake_server(handler) as port:
        client = AsyncWebSocketClient("r", host=HOST, port=port)
        client.awareness.set_local_state({"user": "client"})
        async with client:
            text = client.doc.get("text", type=Text)
            assert str(text) == "served"
            await wait_for_awareness(
                client.awareness, lambda: client.awareness.states.get(5) == {"user": "server"}
            )
            text += "!"
            assert await to_thread.run_sync(got_update.wait, 10)
    assert b"client" in seen["announced"]
    assert b"client" in seen["answered"]
    assert "permission denied: read-only" in caplog.text


async def test_our_client_holds_an_update_that_starts_beyond_its_document() -> None:
    # yrs (pycrdt's too) mishandles some updates that start beyond a document's clocks, so
    # the client keeps such an update until what it builds on has arrived, as Yjs does.
    # The second edit is in another text: it depends on nothing the client lacks but the
    # clocks before it (the layout yrs integrates at once, behind a placeholder).
    source: Doc[Any] = Doc()
    source.get("text", type=Text).insert(0, "first")
    first = source.get_update()
    middle = source.get_state()
    source.get("other", type=Text).insert(0, "second")
    second = source.get_update(middle)
    held_back: list[str] = []

    def text_in(step2: bytes) -> str:
        doc: Doc[Any] = Doc()
        doc.apply_update(read_message(step2[2:]))
        return str(doc.get("other", type=Text))

    def handler(ws: ServerConnection) -> None:
        try:
            ws.send(create_sync_message(Doc()) + step2_message(Doc().get_update()))
            receive_until(ws, b"\x00\x01")  # its answer to our step 1
            # The second edit alone. The client answers a step 1 before it applies the
            # updates of the same batch, so the answer to a second step 1, sent once the first
            # came, shows what its document holds after that batch.
            ws.send(update_message(second) + create_sync_message(Doc()))
            receive_until(ws, b"\x00\x01")
            ws.send(create_sync_message(Doc()))
            held_back.append(text_in(receive_until(ws, b"\x00\x01")))
            ws.send(update_message(first))
            receive_until(ws, b"\xff")  # until the client leaves
        except ConnectionClosed:
            pass

    with fake_server(handler) as port:
        async with AsyncWebSocketClient("r", host=HOST, port=port) as client:
            text, other = (client.doc.get(name, type=Text) for name in ("text", "other"))
            await wait_until(client.doc, lambda: (str(text), str(other)) == ("first", "second"))
    assert held_back == [""], "the second edit was applied before the first"


async def test_an_awareness_update_is_echoed_to_its_sender() -> None:
    """y-websocket clients count their own awareness renewals coming back as signs of life: a
    client alone in a room that heard nothing for 30 s would reconnect."""
    async with AsyncWebSocketServer(host=HOST, port=0) as server:

        def lone_client() -> bytes:
            with connect(f"ws://{HOST}:{server.port}/alone") as ws:
                ws.send(awareness_message(42, 3, '{"user":"alone"}'))
                return receive_until(ws, b"\x01")

        echo = await to_thread.run_sync(lone_client)
        assert echo == awareness_message(42, 3, '{"user":"alone"}')
