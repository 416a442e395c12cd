"""Channels: the transport-agnostic message streams a document is synced over."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Channel(ABC):
    """A blocking stream of messages used to synchronize a document (a WebSocket, a pipe...).

    Implement it to sync a document over a transport of your own with `wiredb.Client`:
    ```py
    message = channel.receive()   # blocks until a message arrives
    message = channel.receive(0)  # a message if one is there, else TimeoutError
    channel.send(message)
    ```
    """

    @property
    @abstractmethod
    def id(self) -> str:
        """The channel ID (the room it belongs to)."""

    @abstractmethod
    def send(self, message: bytes) -> None:
        """Sends a message."""

    @abstractmethod
    def receive(self, timeout: float | None = None) -> bytes:
        """Receives a message, waiting at most `timeout` seconds (forever if None).

        Raises:
            TimeoutError: No message arrived in time.
        """


class AsyncChannel(ABC):
    """An asynchronous stream of messages used to synchronize a document.

    Implement it to serve clients of a transport of your own with `Room.serve()`, or to sync a
    document over it with `wiredb.AsyncClient`. Messages are received until the stream ends:
    ```py
    async for message in channel:
        ...
    await channel.send(message)
    ```
    """

    @property
    @abstractmethod
    def id(self) -> str:
        """The channel ID (the room it belongs to)."""

    def __aiter__(self) -> AsyncChannel:
        return self

    async def __anext__(self) -> bytes:
        return await self.receive()

    @abstractmethod
    async def send(self, message: bytes) -> None:
        """Sends a message."""

    @abstractmethod
    async def receive(self) -> bytes:
        """Receives a message; raises `StopAsyncIteration` (or any error) when the stream ends."""


class NotProvided:
    """A 0.7.1 internal channel class kept for its name only: creating one raises, naming what
    to use instead (the subclass's docstring, up to its first colon)."""

    def __new__(cls, *args: object, **kwargs: object) -> NotProvided:
        # Raised before the abstract methods of the channel base are even checked.
        instead = (cls.__doc__ or "").strip().splitlines()[0].split(":")[0]
        raise NotImplementedError(
            f"{cls.__module__}.{cls.__qualname__} (0.7.1's internal channel) is not provided: "
            f"{instead[:1].lower()}{instead[1:]}"
        )
