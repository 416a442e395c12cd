"""Hostile input at scale: connections sending bad frames of every kind (random, truncated,
length bombs, deep nesting, the yrs repros, max+1 sizes) while honest clients edit the attacked
room and another one. The process survives, its memory stays bounded, honest clients lose
nothing, and a new joiner syncs.

The scale is the issue's 100 connections x 100 frames; WIREDB_HOSTILE_SCALE=0.2 shrinks it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from anyio import create_task_group, to_thread
from pycrdt import Map

from helpers import wait_until
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer

pytestmark = pytest.mark.anyio

ATTACKER = Path(__file__).parent / "hostile" / "attacker.py"
MAX_MESSAGE_BYTES = 1 << 20


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def test_a_swarm_of_bad_frames_changes_nothing_for_honest_clients() -> None:
    scale = float(os.environ.get("WIREDB_HOSTILE_SCALE", "1"))
    connections, frames = max(2, int(100 * scale)), max(2, int(100 * scale))
    edits = 200
    async with AsyncWebSocketServer(
        host="127.0.0.1", port=0, max_message_bytes=MAX_MESSAGE_BYTES
    ) as server:
        port = server.port
        async with (
            AsyncWebSocketClient("attacked", host="127.0.0.1", port=port) as a,
            AsyncWebSocketClient("attacked", host="127.0.0.1", port=port) as b,
            AsyncWebSocketClient("calm", host="127.0.0.1", port=port) as c,
            AsyncWebSocketClient("calm", host="127.0.0.1", port=port) as d,
        ):
            baseline = rss_bytes()
            report: dict[str, int] = {}
            counts = [str(connections), str(frames), str(MAX_MESSAGE_BYTES)]

            async def swarm() -> None:
                result = await to_thread.run_sync(
                    lambda: subprocess.run(
                        [sys.executable, str(ATTACKER), str(port), "attacked", *counts],
                        capture_output=True,
                        text=True,
                        timeout=600,
                    )
                )
                assert result.returncode == 0, result.stderr[-2000:]
                report.update(json.loads(result.stdout))

            async def edit() -> None:
                for i in range(edits):
                    a.doc.get("a", type=Map)[str(i)] = i
                    c.doc.get("c", type=Map)[str(i)] = i
                    if i % 20 == 0:
                        # Paced by the honest peer's progress, so edits interleave the attack.
                        seen: Map[int] = b.doc.get("a", type=Map)
                        await wait_until(b.doc, lambda: len(seen) > i)  # noqa: B023

            async with create_task_group() as tg:
                tg.start_soon(swarm)
                tg.start_soon(edit)

            assert report["sent"] == connections * frames
            # Nearly every kind of bad frame ends its connection; the ignored kinds do not.
            assert sum(n for kind, n in report.items() if kind.startswith("closed")) > 0
            growth = rss_bytes() - baseline
            print(f"attack: {report}; RSS growth {growth / 2**20:.1f} MiB")
            assert growth < 64 << 20, f"RSS grew by {growth >> 20} MiB"

            a_map, c_map = b.doc.get("a", type=Map), d.doc.get("c", type=Map)
            await wait_until(b.doc, lambda: len(a_map) == edits)
            await wait_until(d.doc, lambda: len(c_map) == edits)
            assert dict(a_map) == {str(i): i for i in range(edits)}
            async with AsyncWebSocketClient("attacked", host="127.0.0.1", port=port) as late:
                assert dict(late.doc.get("a", type=Map)) == {str(i): i for i in range(edits)}
