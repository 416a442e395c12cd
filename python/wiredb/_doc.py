"""The documents wiredb creates."""

from __future__ import annotations

from typing import Any, TypeVar

import pycrdt

T = TypeVar("T")


class Doc(pycrdt.Doc):  # type: ignore[type-arg]
    """A `pycrdt.Doc` whose `get()` also takes the root type positionally, as wiredb's
    documentation writes it: `doc.get("text", Text)`."""

    def get(self, key: str, type: type[T] | None = None, **kwargs: Any) -> T:
        if type is None:
            type = kwargs.pop("type")
        return super().get(key, type=type)  # type: ignore[no-any-return]
