"""A swarm of hostile WebSocket clients, run as its own process by tests/test_hostile.py.

    python attacker.py PORT ROOM CONNECTIONS FRAMES MAX_MESSAGE_BYTES

Each of CONNECTIONS tasks sends FRAMES bad frames, reconnecting whenever the server closes it.
Prints one JSON line: how many frames were sent and how the server answered.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections import Counter
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from ywire import update_message as update_frame

# What the fuzzer found against a room (see fuzz/regressions/room/): each sent as a frame and
# as an update, as the fuzz target does.
FUZZ_FOUND = [
    path.read_bytes()
    for path in sorted((Path(__file__).parents[2] / "fuzz/regressions/room").iterdir())
]


def bad_frames(rng: random.Random, max_message_bytes: int) -> list[bytes | str]:
    poison = bytes.fromhex(
        "01030101020c4400000568656c6c6f8801050175037c3fc000007701737e28"
        "01016d026b31017c3f8000000101010102"
    )
    panics = bytes.fromhex("010101ffffffffbf03010101013201010301810100000001001800c4ff")
    nested = bytes.fromhex("0101000000") + b"\x75\x01" * 10_000
    valid = update_frame(bytes.fromhex("01010a000401047465787404616263640000"))
    return [
        rng.randbytes(rng.randint(1, 200)),  # random
        valid[: rng.randint(1, len(valid) - 1)],  # truncated
        b"\x00\x00\x05\x80\x80\x80\x80\x01",  # state vector count bomb
        b"\x00\x02\xff\xff\xff\xff\x0f",  # length bomb
        b"\x01\xff\xff\xff\xff\x0f",  # awareness length bomb
        update_frame(poison),
        update_frame(panics),
        update_frame(nested),
        b"\x00" * (max_message_bytes + 1),  # max + 1
        b"",  # empty
        "text",  # text frame
        b"\x09\x01\x02",  # unknown type
        *FUZZ_FOUND,
        *(update_frame(found) for found in FUZZ_FOUND),
    ]


async def attack(port: int, room: str, frames: int, max_bytes: int, seed: int) -> Counter[str]:
    rng = random.Random(seed)
    outcome: Counter[str] = Counter()
    sent = 0
    while sent < frames:
        try:
            async with connect(
                f"ws://127.0.0.1:{port}/{room}", max_size=None, open_timeout=30
            ) as ws:
                while sent < frames:
                    choices = bad_frames(rng, max_bytes)
                    await ws.send(rng.choice(choices))
                    sent += 1
                    outcome["sent"] += 1
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else 1006
            outcome[f"closed {code}"] += 1
        except (InvalidHandshake, OSError, TimeoutError) as error:
            outcome[f"refused {type(error).__name__}"] += 1
            await asyncio.sleep(0.01)
    return outcome


async def main() -> None:
    port, room, connections, frames, max_bytes = sys.argv[1:6]
    results = await asyncio.gather(
        *(
            attack(int(port), room, int(frames), int(max_bytes), seed)
            for seed in range(int(connections))
        )
    )
    total: Counter[str] = Counter()
    for result in results:
        total.update(result)
    print(json.dumps(dict(total)))


asyncio.run(main())
