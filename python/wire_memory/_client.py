"""The memory client: a `pycrdt.Doc` synced with a room of an `AsyncMemoryServer`."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from pycrdt import Doc

from wiredb import AsyncClient, AsyncClientMixin

from ._server import AsyncMemoryServer, Memory


class AsyncMemoryClient(AsyncClientMixin):
    """A document synced with a room of a server in the same process.

    ```py
    async with AsyncMemoryServer() as server:
        async with AsyncMemoryClient("my_id", server=server) as client:
            text = client.doc.get("text", type=Text)
            text += "Hello"
    ```
    On entry the document is synchronized (with `auto_pull`); on exit every change made before
    has reached the room. `channel` is the client's `Memory` channel, which counts messages.
    """

    channel: Memory

    def __init__(
        self,
        id: str = "",
        doc: Doc[Any] | None = None,
        auto_push: bool = True,
        auto_pull: bool = True,
        *,
        server: AsyncMemoryServer,
    ) -> None:
        """
        Args:
            id: The room ID.
            doc: The document to sync (a new one if None).
            auto_push: Send local changes as they are made; else on `push()`.
            auto_pull: Apply remote changes as they arrive; else on `pull()`.
            server: The server whose room to join.
        """
        self._id = id
        self._doc = doc
        self._auto_push = auto_push
        self._auto_pull = auto_pull
        self._server = server

    async def __aenter__(self) -> Self:
        self.channel = await self._server.connect(self._id)
        self._client = AsyncClient(self.channel, self._doc, self._auto_push, self._auto_pull)
        try:
            return await super().__aenter__()
        except BaseException:
            self.channel.close()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        try:
            await super().__aexit__(exc_type, exc_val, exc_tb)
        finally:
            self.channel.close()
