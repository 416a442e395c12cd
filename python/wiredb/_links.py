"""Links: what a document syncs through. A native `Endpoint` (WebSocket, room member) is one;
the classes here make a Python `Channel` or `AsyncChannel` into one, using the native codec."""

from __future__ import annotations

import logging
from typing import Protocol

from anyio import Event, wait_readable
from anyio.abc import TaskGroup

from ._channel import AsyncChannel, Channel
from ._wiredb import (
    Batch,
    Endpoint,
    absorb,
    frame_awareness,
    frame_step1,
    frame_step2,
    frame_update,
)

log = logging.getLogger("wiredb")

#: A y-protocols query-awareness message (it has no payload).
QUERY_AWARENESS = b"\x03"

#: Received frames a channel link holds before it stops reading from its channel.
MAX_PENDING_FRAMES = 1024


class Link(Protocol):
    @property
    def unsent(self) -> bool: ...
    def wake_when_sent(self) -> None: ...
    def send_step1(self, state_vector: bytes) -> None: ...
    def send_step2(self, update: bytes) -> None: ...
    def send_update(self, update: bytes) -> None: ...
    def send_awareness(self, payload: bytes) -> None: ...
    def send_query_awareness(self) -> None: ...
    def receive(self) -> Batch: ...
    def close(self, code: int = 1000, reason: str = "") -> None: ...


class AsyncChannelLink:
    """A link over an `AsyncChannel`: two tasks move frames between the channel and lists the
    document takes from and adds to without waiting."""

    def __init__(self, channel: AsyncChannel) -> None:
        self._channel = channel
        self._incoming: list[bytes] = []
        self._outgoing: list[bytes] = []
        self._received = Event()
        self._to_send = Event()
        self._taken = Event()
        self._closing = False
        self._sending = False
        self._wake_when_sent = False
        self._closed: tuple[int, str] | None = None

    def start(self, task_group: TaskGroup) -> None:
        task_group.start_soon(self._pump_in)
        task_group.start_soon(self._pump_out)

    @property
    def unsent(self) -> bool:
        """Whether frames wait to be sent, or are being sent."""
        return bool(self._outgoing) or self._sending

    @property
    def delivery_pending(self) -> bool:
        """Whether something sent or received waits for one of this link's tasks: frames to
        send, frames received and not taken, or frames its channel holds for it (a channel
        may say so with a `delivery_pending` property, as `wire_memory.Memory` does)."""
        if self._closed is not None:
            return False
        return (
            self.unsent
            or bool(self._incoming)
            or bool(getattr(self._channel, "delivery_pending", False))
        )

    def wake_when_sent(self) -> None:
        """Wakes `wait()` once nothing is `unsent`."""
        if self.unsent:
            self._wake_when_sent = True
        else:
            self._received.set()

    def _send(self, frame: bytes) -> None:
        if not self._closing:
            self._outgoing.append(frame)
            self._to_send.set()

    def send_step1(self, state_vector: bytes) -> None:
        self._send(frame_step1(state_vector))

    def send_step2(self, update: bytes) -> None:
        self._send(frame_step2(update))

    def send_update(self, update: bytes) -> None:
        self._send(frame_update(update))

    def send_awareness(self, payload: bytes) -> None:
        self._send(frame_awareness(payload))

    def send_query_awareness(self) -> None:
        self._send(QUERY_AWARENESS)

    def receive(self) -> Batch:
        frames, self._incoming = self._incoming, []
        self._taken.set()
        return absorb(frames, self._closed)

    async def wait(self) -> None:
        """Returns when `receive()` has something."""
        if not self._incoming and self._closed is None:
            await self._received.wait()
        self._received = Event()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Sends what is queued, then reports the link closed."""
        self._closing = True
        self._to_send.set()

    def _end(self, code: int, reason: str) -> None:
        if self._closed is None:
            self._closed = (code, reason)
            self._received.set()

    async def _pump_in(self) -> None:
        try:
            async for message in self._channel:
                self._incoming.append(bytes(message))
                self._received.set()
                if len(self._incoming) >= MAX_PENDING_FRAMES:
                    self._taken = Event()
                    await self._taken.wait()
        except Exception as error:
            log.debug("channel %r ended: %r", self._channel.id, error)
            self._end(1006, f"channel ended: {error!r}")
        else:
            self._end(1000, "")

    async def _pump_out(self) -> None:
        while True:
            await self._to_send.wait()
            self._to_send = Event()
            frames, self._outgoing = self._outgoing, []
            self._sending = True
            try:
                for frame in frames:
                    await self._channel.send(frame)
            except Exception as error:
                self._end(1006, f"channel send failed: {error!r}")
                return
            self._sending = False
            if self._wake_when_sent and not self._outgoing:
                self._wake_when_sent = False
                self._received.set()
            if self._closing and not self._outgoing:
                self._end(1000, "")
                return


class ChannelLink:
    """A link over a blocking `Channel`: sends go out at once, `receive()` takes what the
    channel has without waiting."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._held: list[bytes] = []
        self._closed: tuple[int, str] | None = None

    @property
    def unsent(self) -> bool:
        """Never: a blocking channel's `send` returns once sent."""
        return False

    def wake_when_sent(self) -> None:
        pass

    def send_step1(self, state_vector: bytes) -> None:
        self._channel.send(frame_step1(state_vector))

    def send_step2(self, update: bytes) -> None:
        self._channel.send(frame_step2(update))

    def send_update(self, update: bytes) -> None:
        self._channel.send(frame_update(update))

    def send_awareness(self, payload: bytes) -> None:
        self._channel.send(frame_awareness(payload))

    def send_query_awareness(self) -> None:
        self._channel.send(QUERY_AWARENESS)

    def receive(self) -> Batch:
        frames, self._held = self._held, []
        while True:
            try:
                frames.append(bytes(self._channel.receive(0)))
            except TimeoutError:
                break
        return absorb(frames, self._closed)

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until a message arrives (kept for the next `receive()`)."""
        if self._held:
            return True
        try:
            self._held.append(bytes(self._channel.receive(timeout)))
        except TimeoutError:
            return False
        return True

    def close(self, code: int = 1000, reason: str = "") -> None:
        self._closed = (code, reason)


async def wait_link(link: Link) -> None:
    """Returns when `link.receive()` has something."""
    if isinstance(link, Endpoint):
        await wait_readable(link.fd)
    elif isinstance(link, AsyncChannelLink):
        await link.wait()
    else:
        raise TypeError(f"cannot wait on {link!r} in an event loop")
