"""Knowing that what a client sent has arrived: a marker sent after it on the same connection."""

from __future__ import annotations

from helpers import wait_for_awareness
from wiredb import AsyncClientMixin


async def mark(sender: AsyncClientMixin, receiver: AsyncClientMixin, value: str) -> None:
    """Returns once `receiver` has received `value` as `sender`'s awareness state.

    The awareness update goes out on `sender`'s connection after anything `sender` sent before,
    a room relays a member's messages in order, and a receiver handles its connection in order
    (awareness is applied with or without `auto_pull`): once `receiver` sees the marker, it has
    received every update `sender` sent before it (applied, or pending until `pull()`).
    """
    sender.awareness.set_local_state({"mark": value})
    awareness = receiver.awareness
    sender_id = sender.doc.client_id

    def seen() -> bool:
        state = awareness.states.get(sender_id)
        return state is not None and state.get("mark") == value

    await wait_for_awareness(awareness, seen)
