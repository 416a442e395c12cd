"""The pipe client: a `pycrdt.Doc` synced with a room of an `AsyncPipeServer`."""

from __future__ import annotations

from typing import Any, Self

from pycrdt import Doc

from wiredb import AsyncClient, AsyncClientMixin
from wiredb._wiredb import Endpoint

#: A socket descriptor, the (sending, receiving) descriptors of two pipes, or wire-pipe
#: 0.7.1's `(sender, receiver, server_sender, server_receiver)`.
Connection = int | tuple[int, int] | tuple[int, int, int, int]


class AsyncPipeClient(AsyncClientMixin):
    """A document synced with a room of a pipe server, typically from a child process.

    ```py
    async with AsyncPipeClient("my_id", connection=fd) as client:
        text = client.doc.get("text", type=Text)
        text += "Hello"
    ```
    The connection is what `AsyncPipeServer.connect()` returned, or the client's ends of two
    pipes as `(sender, receiver)`. The client owns it: it is closed when the client exits (or
    fails to connect). Frames are read and written in Rust; on entry the document is
    synchronized (with `auto_pull`), on exit every change made before has been sent.

    wire-pipe 0.7.1's form `(sender, receiver, server_sender, server_receiver)` works too:
    the client uses and owns the first two; the last two are the server's ends, which
    `connect(id, server_sender, server_receiver)` handed to the server (it closes them), so
    the client leaves them alone.
    """

    def __init__(
        self,
        id: str = "",
        doc: Doc[Any] | None = None,
        auto_push: bool = True,
        auto_pull: bool = True,
        *,
        connection: Connection,
        max_message_bytes: int = 64 << 20,
    ) -> None:
        """
        Args:
            id: The room ID (the server chose the room in `connect()`).
            doc: The document to sync (a new one if None).
            auto_push: Send local changes as they are made; else on `push()`.
            auto_pull: Apply remote changes as they arrive; else on `pull()`.
            connection: A socket descriptor, or `(sender, receiver)` pipe descriptors
                (optionally followed by the server's two, as wire-pipe 0.7.1 took them).
            max_message_bytes: A larger message ends the connection.
        """
        if not isinstance(connection, int) and len(connection) not in (2, 4):
            raise ValueError(
                "connection: a descriptor, (sender, receiver), or "
                "(sender, receiver, server_sender, server_receiver)"
            )
        self.id = id
        self._connection = connection
        self._max_message_bytes = max_message_bytes
        self._doc = doc
        self._auto_push = auto_push
        self._auto_pull = auto_pull

    async def __aenter__(self) -> Self:
        if isinstance(self._connection, int):
            sender = receiver = self._connection
        else:
            sender, receiver = self._connection[:2]
        # Opened here, so that a bad descriptor fails before anything starts.
        # Handed over once: nothing here keeps it (and its descriptors) after the client closes.
        endpoints = [Endpoint.pipe(sender, receiver, self._max_message_bytes)]
        self._client = AsyncClient(endpoints.pop, self._doc, self._auto_push, self._auto_pull)
        return await super().__aenter__()
