"""Python-side workload: how fast a `pycrdt.Doc` behind `AsyncWebSocketClient` takes in a burst
of remote updates. Runs with whichever `wire_websocket` the interpreter has (wiredb's or the
original's), against `wiredb-loadgen burst-server`, which answers the client's first update
with `--updates` updates of 4 characters each. Prints one JSON object.

    python bench/client_burst.py --port 8001 --updates 10000
"""

from __future__ import annotations

import argparse
import json
import time

import anyio
from pycrdt import Text

from wire_websocket import AsyncWebSocketClient

EDIT_LEN = 4
GO = "go"


async def main(port: int, updates: int, limit: float) -> dict[str, object]:
    async with AsyncWebSocketClient("burst", host="http://127.0.0.1", port=port) as client:
        text = client.doc.get("text", type=Text)
        goal = updates * EDIT_LEN + len(GO)
        start = time.perf_counter()
        text += GO  # the server answers this first update with the burst
        with anyio.fail_after(limit):
            # Polled rather than observed: the same cost for both clients, and 1 ms is small
            # next to the burst.
            while len(text) < goal:
                await anyio.sleep(0.001)
        took = time.perf_counter() - start
    return {"updates": updates, "seconds": took, "updates_per_s": updates / took}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--limit", type=float, default=120.0)
    args = parser.parse_args()
    print(json.dumps(anyio.run(main, args.port, args.updates, args.limit)), flush=True)
