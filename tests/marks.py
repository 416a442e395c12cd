"""Knowing that what a client sent has arrived: a marker sent after it on the same connection."""

from __future__ import annotations

from pycrdt import Text

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


async def check_one_pull_applies_everything(
    a: AsyncClientMixin, c: AsyncClientMixin, b: AsyncClientMixin
) -> None:
    """`b` (auto_pull=False) receives several updates from `a` and `c`, each in its own batch
    (it saw the marker sent after it before the next is made); one `pull()` applies them all."""
    for word in ("one", "two", "three"):
        a.doc.get("a", type=Text).insert(0, word)
        await mark(a, b, word)
    for word in ("x", "y"):
        c.doc.get("c", type=Text).insert(0, word)
        await mark(c, b, word)
    text_a, text_c = b.doc.get("a", type=Text), b.doc.get("c", type=Text)
    assert (str(text_a), str(text_c)) == ("", "")
    b.pull()
    assert (str(text_a), str(text_c)) == ("threetwoone", "yx")
