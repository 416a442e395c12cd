"""Waiting for a wire to stop, when its server's context is left, cancelled or not."""

from __future__ import annotations

import math

from anyio import BusyResourceError, current_effective_deadline, move_on_after, sleep, wait_readable

from ._room import RoomManager


async def wait_stopped(room_manager: RoomManager, timeout: float) -> None:
    """Returns once the wire said its peers are gone (the "stopped" event of the manager's
    registry, which follows the wire's native `stop()`), or after `timeout` seconds.

    Leaving a server by cancellation (Ctrl-C, a cancelled task group, `move_on_after`) cancels
    the manager's dispatcher too, so nobody would report that event: the wait would last the
    whole timeout. Then the registry is read here instead; only "stopped" matters, since the
    manager closes every room next anyway.
    """
    cancelled = current_effective_deadline() == -math.inf
    with move_on_after(timeout, shield=True):
        registry = room_manager._registry
        if not cancelled or registry is None:
            await room_manager._wait_stopped()
            return
        while not room_manager._stopped.is_set():
            try:
                await wait_readable(registry.fd)
            except BusyResourceError:
                # The cancelled dispatcher has not left its own wait yet.
                await sleep(0)
                continue
            if any(kind == "stopped" for kind, _ in registry.events()):
                return
