"""Waiting on real events instead of sleeping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from anyio import Event, fail_after
from pycrdt import Awareness, Doc


async def wait_until(doc: Doc[Any], predicate: Callable[[], bool], timeout: float = 10) -> None:
    """Waits until `predicate()` holds, re-checking on every change of `doc`."""
    with fail_after(timeout):
        while not predicate():
            changed = Event()
            subscription = doc.observe(lambda _: changed.set())  # noqa: B023 (used in this turn)
            try:
                if predicate():
                    return
                await changed.wait()
            finally:
                doc.unobserve(subscription)


async def wait_for_awareness(
    awareness: Awareness, predicate: Callable[[], bool], timeout: float = 10
) -> None:
    """Waits until `predicate()` holds, re-checking on every change of `awareness`."""
    with fail_after(timeout):
        while not predicate():
            changed = Event()
            subscription = awareness.observe(lambda topic, event: changed.set())  # noqa: B023
            try:
                if predicate():
                    return
                await changed.wait()
            finally:
                awareness.unobserve(subscription)
