"""`wait_delivered()`: knowing that what this process's clients sent has been delivered to the
other clients in this process.

Delivery in a process runs through descriptors: a room core hands a frame to each member's
queue at once, in the sender's call, but the receiving client learns of it when its event loop
polls that member's eventfd. asyncio polls only between callbacks, so `wait_all_tasks_blocked()`
can see every task blocked while a frame already waits to be read (the memory wire wakes its
receivers itself for that reason). This module follows the open async clients of each thread
and waits until none of them has anything waiting, either way.
"""

from __future__ import annotations

import os
import select
import threading
from typing import Protocol
from weakref import WeakSet

from anyio import sleep
from anyio.lowlevel import checkpoint

#: Scheduler passes before `wait_delivered` starts sleeping between checks (a pass is enough
#: for each hop in a process; more means something is slower, a socket or a busy room).
BUSY_PASSES = 64
#: Seconds between checks after that.
POLL_INTERVAL = 0.001


class Tracked(Protocol):
    def _delivery_pending(self) -> bool: ...


#: By (process, thread): the open clients of each event loop's thread. A forked child starts
#: with an empty set (its parent's clients are not its own).
_tracked: dict[tuple[int, int], WeakSet[Tracked]] = {}


def _key() -> tuple[int, int]:
    return os.getpid(), threading.get_ident()


def track(obj: Tracked) -> None:
    _tracked.setdefault(_key(), WeakSet()).add(obj)


def untrack(obj: Tracked) -> None:
    tracked = _tracked.get(_key())
    if tracked is not None:
        tracked.discard(obj)
        if not tracked:
            del _tracked[_key()]


def readable(fd: int) -> bool:
    """Whether `fd` has something to read now (its owner has not taken it yet)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    try:
        return bool(poller.poll(0))
    except OSError:
        return False


async def wait_delivered() -> None:
    """Returns once everything the async clients of this thread's event loop sent so far has
    been delivered in this process: each local change was handed to its connection, and every
    client of a room of an `AsyncMemoryServer` in this process has received what the room
    relayed to it (and applied it, unless it waits for `pull()` with `auto_pull=False`).

    It stands in for `await wait_all_tasks_blocked()` in code written for 0.7.1:
    ```py
    text0 += "Hello"
    await wiredb.wait_delivered()
    assert str(text1) == "Hello"
    ```
    Over a socket (WebSocket, pipe) "handed to its connection" means written to it: what the
    peer does next happens in its own time (await the change where it is expected, e.g. with
    an observer, or `client.wait_sent()` for the writing alone).
    """
    passes = 0
    while True:
        await checkpoint()
        tracked = _tracked.get(_key())
        if not tracked or not any(obj._delivery_pending() for obj in list(tracked)):
            return
        passes += 1
        if passes > BUSY_PASSES:
            # Not a hop in this process any more (a socket being written, a room busy on
            # another thread): check less often rather than spin.
            await sleep(POLL_INTERVAL)
