"""The attacks of tests/test_attacks.py (issue 13), each run as a process of its own:

    python attacks.py ATTACK PORT ROOM [N=V ...]

Prints one JSON object: what happened (close codes, replies counted, seconds taken). Every
attack is bounded in count and in time (ATTACK_SECONDS): past it, what is left is abandoned
and "timed_out" is reported, so a server that stalls fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pycrdt import Doc, Text
from ywire import (
    AWARENESS,
    QUERY_AWARENESS,
    STEP2,
    SYNC,
    AsyncSocket,
    Closed,
    awareness_message,
    big_text,
    sync_step1,
    text_chain,
    update_message,
)

ATTACK_SECONDS = 30.0
Report = dict[str, Any]


async def synced(ws: AsyncSocket, replies: list[int] | None = None) -> None:
    """Sends a sync step 1 and reads until its step 2: the server handles a connection's
    messages in order, so everything sent before has been handled. Counts the awareness
    messages read meanwhile into `replies`."""
    await ws.send(sync_step1())
    while True:
        for message in await ws.messages():
            if message.kind == SYNC and message.sub == STEP2:
                return
            if message.kind == AWARENESS and replies is not None:
                replies[0] += 1


async def answer_or_close(ws: AsyncSocket) -> bytes | int:
    """Reads (and drops) everything until the answer to a sync step 1 (its update) or until
    the server closes the connection (its close code)."""
    try:
        while True:
            for message in await ws.messages():
                if message.kind == SYNC and message.sub == STEP2:
                    return message.payload
    except Closed as closed:
        return closed.code


async def send_until_closed(ws: AsyncSocket, messages: list[bytes]) -> bytes | int:
    """Sends `messages`, then a sync step 1, on a new connection, while reading what comes
    back: the server's close code if it closes the connection first, else its answer to the
    step 1 (the whole document), once everything sent before was handled."""
    reader = asyncio.ensure_future(answer_or_close(ws))
    try:
        for message in [*messages, sync_step1()]:
            if reader.done():
                break
            try:
                await ws.send(message)
            except (ConnectionError, OSError):
                break
        return await reader
    finally:
        reader.cancel()


def code_of(result: bytes | int) -> int | None:
    return result if isinstance(result, int) else None


def text_length(result: bytes | int) -> int | None:
    """The length of the text "t" in a step 2's update."""
    if isinstance(result, int):
        return None
    doc: Doc[Any] = Doc()
    text = doc.get("t", type=Text)
    doc.apply_update(result)
    return len(str(text))


async def drain(ws: AsyncSocket) -> None:
    try:
        while True:
            await ws.read_frame()
    except Closed:
        pass


async def query_flood(port: int, room: str, connections: int = 2, size: int = 64 << 20) -> Report:
    """Item 1: a frame of `size` one-byte query-awareness messages, from `connections`
    connections at once, to a room holding one awareness state (so that there is something
    to answer). Counts the awareness answers each got."""
    flood = bytes([QUERY_AWARENESS]) * size
    holder = await AsyncSocket.connect(port, room)
    await holder.send(awareness_ids(1, 1, 100))
    await synced(holder)
    draining = asyncio.ensure_future(drain(holder))

    async def one() -> Report:
        ws = await AsyncSocket.connect(port, room)
        replies = [0]
        try:
            await synced(ws)  # past what the room sends on joining
            await ws.send(flood)
            await synced(ws, replies)
            return {"replies": replies[0], "closed": None}
        except Closed as closed:
            return {"replies": replies[0], "closed": closed.code}
        finally:
            await ws.close()

    try:
        results = await asyncio.gather(*(one() for _ in range(connections)))
    finally:
        draining.cancel()
        await holder.close()
    return {"connections": results}


def awareness_ids(first: int, count: int, state_bytes: int) -> bytes:
    state = json.dumps({"pad": "x" * state_bytes})
    return awareness_message([(first + i, 1, state) for i in range(count)])


async def awareness_flood(
    port: int,
    room: str,
    connections: int = 2,
    messages: int = 30,
    ids: int = 500,
    state_bytes: int = 60_000,
    small_messages: int = 100,
) -> Report:
    """Item 2: each of `connections` connections sends `messages` awareness messages of `ids`
    new client ids each (states of `state_bytes`), and one more connection sends
    `small_messages` messages of 8 new ids each (every message inside any per-message cap:
    only the ids it has piled up are too many)."""

    async def flood(n: int, per_message: int, offset: int) -> int | None:
        ws = await AsyncSocket.connect(port, room)
        try:
            batch = [
                awareness_ids(offset + k * per_message, per_message, state_bytes) for k in range(n)
            ]
            return code_of(await send_until_closed(ws, batch))
        finally:
            await ws.close()

    big = [flood(messages, ids, 1_000_000 * (c + 1)) for c in range(connections)]
    small = flood(small_messages, 8, 100_000_000)
    codes = await asyncio.gather(*big, small)
    return {"large": list(codes[:-1]), "small": codes[-1]}


async def hold(members: list[AsyncSocket], seconds: float) -> None:
    """Keeps the members connected (never reading) for `seconds`: how long the attack lasts."""
    await asyncio.sleep(seconds)
    await asyncio.gather(*(m.close() for m in members))


async def broadcast_fanout(
    port: int, room: str, members: int = 64, size: int = 30_000_000, seconds: float = 2.0
) -> Report:
    """Item 3: `members` connections that never read, then one update of `size` bytes to
    them all."""
    idle = []
    for _ in range(members):
        ws = await AsyncSocket.connect(port, room, rcvbuf=4096)
        await ws.send(sync_step1())  # the room sends its updates to members that synced
        idle.append(ws)
    sender = await AsyncSocket.connect(port, room)
    try:
        await sender.send(update_message(big_text(1, size)))
        await synced(sender)
        closed = None
    except Closed as error:
        closed = error.code
    finally:
        await sender.close()
    await hold(idle, seconds)
    return {"sender_closed": closed}


async def fill_rooms(port: int, room: str, rooms: int = 12, size: int = 30_000_000) -> Report:
    """Rooms of one `size`-byte update each, kept open, one after the other, past the
    process's memory budget; then all closed. The close code of each (None: accepted)."""
    held = []
    codes = []
    try:
        for k in range(rooms):
            ws = await AsyncSocket.connect(port, f"{room}-{k}")
            held.append(ws)
            codes.append(code_of(await send_until_closed(ws, [update_message(big_text(1, size))])))
    finally:
        await asyncio.gather(*(ws.close() for ws in held))
    return {"codes": codes}


async def awareness_fanout(
    port: int, room: str, members: int = 160, state_bytes: int = 60_000, seconds: float = 2.0
) -> Report:
    """Item 3: `members` connections that never read, each sending one awareness state of
    `state_bytes` for its own client id."""
    idle = []
    for client in range(members):
        ws = await AsyncSocket.connect(port, room, rcvbuf=4096)
        await ws.send(awareness_ids(client + 1, 1, state_bytes))
        idle.append(ws)
    await hold(idle, seconds)
    return {"members": members}


async def prepend_flood(
    port: int, room: str, count: int = 1_000_000, chunk: int = 50_000
) -> Report:
    """Item 4: `count` one-character prepends (7 MB on the wire), in updates of `chunk`."""
    ws = await AsyncSocket.connect(port, room)
    try:
        updates = [
            update_message(text_chain(1, start, min(chunk, count - start), prepend=True))
            for start in range(0, count, chunk)
        ]
        result = await send_until_closed(ws, updates)
        return {"closed": code_of(result), "sent": count}
    finally:
        await ws.close()


async def out_of_order(port: int, room: str, count: int = 150_000, per_frame: int = 1000) -> Report:
    """Item 6: `count` one-item updates that all wait for the first one (sent last), many
    messages to a frame. Reports the text length a new client then finds."""
    ws = await AsyncSocket.connect(port, room)
    try:
        frames = []
        for start in range(1, count + 1, per_frame):
            end = min(start + per_frame, count + 1)
            frames.append(
                b"".join(
                    update_message(text_chain(7, clock, 1, prepend=False))
                    for clock in range(start, end)
                )
            )
        frames.append(update_message(text_chain(7, 0, 1, prepend=False)))
        result = await send_until_closed(ws, frames)
        return {"closed": code_of(result), "items": count + 1, "length": text_length(result)}
    finally:
        await ws.close()


async def query_many_states(
    port: int,
    room: str,
    holders: int = 50,
    ids: int = 8,
    state_bytes: int = 1000,
    frames: int = 4,
    size: int = 3000,
) -> Report:
    """Item 6: a room holding `holders` x `ids` awareness states, then `frames` frames of
    `size` query-awareness bytes. Counts the awareness answers."""
    members = []
    readers = []
    for h in range(holders):
        ws = await AsyncSocket.connect(port, room)
        members.append(ws)
        await ws.send(awareness_ids(1000 + h * ids, ids, state_bytes))
        await synced(ws)  # its states are in
        readers.append(asyncio.ensure_future(drain(ws)))
    attacker = await AsyncSocket.connect(port, room)
    replies = [0]
    start = time.monotonic()
    try:
        await synced(attacker)  # past what the room sends on joining
        start = time.monotonic()
        for _ in range(frames):
            await attacker.send(bytes([QUERY_AWARENESS]) * size)
        await synced(attacker, replies)
        seconds = time.monotonic() - start
        closed = None
    except Closed as error:
        closed = error.code
        seconds = time.monotonic() - start
    finally:
        await attacker.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*(m.close() for m in members))
    return {
        "replies": replies[0],
        "closed": closed,
        "frames": frames,
        "seconds": round(seconds, 2),
    }


async def conflict(port: int, room: str, items: int = 15_000) -> Report:
    """Item 6: YATA's worst case: `items` prepends at the start of the text from client 1,
    then as many from client 2, all at the same position (each of client 2's items is
    compared with every one of client 1's)."""
    first = await AsyncSocket.connect(port, room)
    second = await AsyncSocket.connect(port, room)
    try:
        first_closed = await send_until_closed(
            first, [update_message(text_chain(1, 0, items, prepend=True))]
        )
        start = time.monotonic()
        second_closed = await send_until_closed(
            second, [update_message(text_chain(2, 0, items, prepend=True))]
        )
        return {
            "first": code_of(first_closed),
            "second": code_of(second_closed),
            "second_seconds": round(time.monotonic() - start, 2),
        }
    finally:
        await first.close()
        await second.close()


ATTACKS: dict[str, Callable[..., Awaitable[Report]]] = {
    "query_flood": query_flood,
    "awareness_flood": awareness_flood,
    "broadcast_fanout": broadcast_fanout,
    "awareness_fanout": awareness_fanout,
    "fill_rooms": fill_rooms,
    "prepend_flood": prepend_flood,
    "out_of_order": out_of_order,
    "query_many_states": query_many_states,
    "conflict": conflict,
}


async def main() -> None:
    name, port, room, *args = sys.argv[1:]
    options = {k: int(v) for k, v in (arg.split("=", 1) for arg in args)}
    start = time.monotonic()
    try:
        report = await asyncio.wait_for(ATTACKS[name](int(port), room, **options), ATTACK_SECONDS)
    except TimeoutError:
        report = {"timed_out": True}
    except (ConnectionError, OSError) as error:
        # The server went away (or refused): the test sees why from the server's side.
        report = {"error": repr(error)}
    report["attack_seconds"] = round(time.monotonic() - start, 2)
    print(json.dumps(report), flush=True)


asyncio.run(main())
