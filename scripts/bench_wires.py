"""Times edits crossing a room of the memory and pipe wires, and counts the memory wire's messages.

Uses only the API that wiredb shares with the original 0.7.1 wires, so the same script measures
both:

    python scripts/bench_wires.py                          # this wiredb
    PYTHONPATH=/path/to/0.7.1 python scripts/bench_wires.py  # wiredb, wire-memory, wire-pipe 0.7.1

Each run: a room of `clients` clients; the first makes `edits` edits (one transaction each), and
the time is taken until every other client has all of them. Then one more edit is counted in
messages (memory wire: what every client's channel sent and received).
"""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack
from time import perf_counter
from typing import Any

import anyio
from pycrdt import Doc, Text
from wire_memory import AsyncMemoryClient, AsyncMemoryServer
from wire_pipe import AsyncPipeClient, AsyncPipeServer


async def until(doc: Doc[Any], predicate: Any) -> None:
    with anyio.fail_after(120):
        while not predicate():
            changed = anyio.Event()
            subscription = doc.observe(lambda _: changed.set())
            try:
                if not predicate():
                    await changed.wait()
            finally:
                doc.unobserve(subscription)


async def run(wire: str, clients: int, edits: int, note: str) -> None:
    server: Any = AsyncMemoryServer() if wire == "memory" else AsyncPipeServer()
    async with server, AsyncExitStack() as stack:
        entered = []
        for _ in range(clients):
            if wire == "memory":
                client: Any = AsyncMemoryClient("bench", server=server)
            else:
                client = AsyncPipeClient("bench", connection=await server.connect("bench"))
            entered.append(await stack.enter_async_context(client))
        texts = [c.doc.get("text", type=Text) for c in entered]
        texts[0] += "w"
        for c, t in zip(entered, texts, strict=True):
            await until(c.doc, lambda t=t: len(t) == 1)

        start = perf_counter()
        for _ in range(edits):
            texts[0] += "x"
        for c, t in zip(entered[1:], texts[1:], strict=True):
            await until(c.doc, lambda t=t: len(t) == edits + 1)
        elapsed = perf_counter() - start
        line = (
            f"{wire:6} clients={clients:3} edits={edits:5}: {elapsed * 1000:8.1f} ms, "
            f"{edits * (clients - 1) / elapsed:9.0f} updates applied/s"
        )

        if wire == "memory":
            # Quiet now; count one edit (and a round in which every client edits, after which
            # whatever the counted edit caused has been sent and received).
            sent = sum(c.channel.send_nb for c in entered)
            received = sum(c.channel.receive_nb for c in entered)
            texts[0] += "y"
            for c, t in zip(entered, texts, strict=True):
                await until(c.doc, lambda t=t: "y" in str(t))
            for i, (c, t) in enumerate(zip(entered, texts, strict=True)):
                t += str(i)
                for d, u in zip(entered, texts, strict=True):
                    await until(d.doc, lambda u=u, i=i: str(i) in str(u))
            messages = (
                sum(c.channel.send_nb for c in entered)
                - sent
                + sum(c.channel.receive_nb for c in entered)
                - received
            )
            line += f", {messages / (clients + 1):.1f} messages per edit"
        print(line, note, flush=True)


async def main() -> None:
    note = sys.argv[1] if len(sys.argv) > 1 else ""
    for wire in ("memory", "pipe"):
        for clients, edits in ((2, 2000), (10, 500)):
            try:
                await run(wire, clients, edits, note)
            except BaseException as error:  # the original's pipe wire fails on exit
                print(f"{wire}: failed on exit: {error!r}"[:200], flush=True)


if __name__ == "__main__":
    anyio.run(main)
