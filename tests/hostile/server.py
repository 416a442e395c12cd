"""An `AsyncWebSocketServer` in a process of its own, for tests/test_attacks.py to attack.

    python server.py '{"memory_limit": 268435456, "max_document_bytes": 33554432}'

Listens on 127.0.0.1 (any free port), with the keyword arguments given as a JSON object,
prints {"port": N} as one line once it listens, and stops on SIGTERM or SIGINT (exit code 0).

With WIREDB_ATTACK_DROP_UNKNOWN=1 it drops (and names on stderr) the arguments the installed
server does not take: only for running the attacks against a build that predates them.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import sys
from typing import Any

import anyio

from wire_websocket import AsyncWebSocketServer


def accepted(kwargs: dict[str, Any]) -> dict[str, Any]:
    if os.environ.get("WIREDB_ATTACK_DROP_UNKNOWN") != "1":
        return kwargs
    known = inspect.signature(AsyncWebSocketServer.__init__).parameters
    dropped = sorted(set(kwargs) - set(known))
    if dropped:
        print(f"server.py: dropped {dropped} (not taken by this build)", file=sys.stderr)
    return {k: v for k, v in kwargs.items() if k in known}


async def main(kwargs: dict[str, Any]) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with AsyncWebSocketServer(host="127.0.0.1", port=0, **accepted(kwargs)) as server:
            print(json.dumps({"port": server.port}), flush=True)
            async for _ in signals:
                break


anyio.run(main, json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})
