"""The documents wiredb creates."""

from __future__ import annotations

import secrets
from typing import Any, TypeVar

import pycrdt

T = TypeVar("T")


def new_client_id() -> int:
    """A random 32-bit Yjs client ID, as Yjs itself draws them.

    pycrdt from 0.13 on (yrs 0.28) draws 53-bit IDs, which yrs before 0.28 (pycrdt 0.12, and so
    the original wiredb 0.7.1) cuts down to 32 bits when it decodes an update: its edits then
    point at items that do not exist, and no peer with the full ID can ever apply them.
    """
    return secrets.randbelow(2**32 - 1) + 1


class Doc(pycrdt.Doc):  # type: ignore[type-arg]
    """A `pycrdt.Doc` whose `get()` also takes the root type positionally, as wiredb's
    documentation writes it: `doc.get("text", Text)`, and whose client ID fits in 32 bits
    (as Yjs draws them), so that peers on older yrs versions read it whole."""

    def __init__(self, *args: Any, client_id: int | None = None, **kwargs: Any) -> None:
        if client_id is None and kwargs.get("doc") is None:
            client_id = new_client_id()
        super().__init__(*args, client_id=client_id, **kwargs)

    def get(self, key: str, type: type[T] | None = None, **kwargs: Any) -> T:
        if type is None:
            type = kwargs.pop("type")
        return super().get(key, type=type)  # type: ignore[no-any-return]
