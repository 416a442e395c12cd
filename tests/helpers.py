"""Waiting on real events instead of sleeping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from anyio import (
    BrokenResourceError,
    CancelScope,
    ClosedResourceError,
    EndOfStream,
    Event,
    connect_tcp,
    create_task_group,
    create_tcp_listener,
    fail_after,
)
from anyio.abc import SocketAttribute, SocketStream, TaskGroup
from anyio.streams.stapled import MultiListener
from pycrdt import Awareness, Doc

from wiredb import AsyncClientMixin, ConnectionStatus


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


class StatusLog:
    """Records every connection status a client goes through, and waits for one to come."""

    def __init__(self, client: AsyncClientMixin) -> None:
        self.seen: list[ConnectionStatus] = []
        self._changed = Event()
        self._client = client
        self._id = client.observe_status(self._record)

    def _record(self, status: ConnectionStatus) -> None:
        self.seen.append(status)
        self._changed.set()

    async def wait_for(self, status: ConnectionStatus, after: int = 0, timeout: float = 10) -> int:
        """Waits until `status` is seen at index >= `after`; returns one past its index."""
        with fail_after(timeout):
            while status not in self.seen[after:]:
                self._changed = Event()
                await self._changed.wait()
        return self.seen.index(status, after) + 1

    def close(self) -> None:
        self._client.unobserve_status(self._id)


class TcpProxy:
    """Forwards TCP connections to `127.0.0.1:target`; can drop every connection it carries
    (the peers see their connections lost, no close handshake) and refuse new ones, or turn
    into a blackhole (`blackhole()`: nothing goes through, nothing is closed) until
    `restore()`."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.refusing = False
        self.port = 0
        self._links: list[CancelScope] = []
        self._task_group: TaskGroup | None = None
        # Set while blackholed: forwarding waits for it.
        self._held: Event | None = None

    async def __aenter__(self) -> TcpProxy:
        listener = await create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(SocketAttribute.local_port)
        self._task_group = create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._serve, listener)
        return self

    async def _serve(self, listener: MultiListener[SocketStream]) -> None:
        async with listener:
            await listener.serve(self._handle)

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        await self._task_group.__aexit__(None, None, None)

    def drop(self) -> None:
        """Cuts every connection now."""
        links, self._links = self._links, []
        for scope in links:
            scope.cancel()

    def blackhole(self) -> None:
        """Stops forwarding bytes, both ways, on every connection it carries and on new ones
        (accepted, then held), without closing anything: a route gone silently dead. What the
        peers send waits in the sockets' buffers."""
        if self._held is None:
            self._held = Event()

    def restore(self) -> None:
        """Forwards again what was held, and what comes next."""
        held, self._held = self._held, None
        if held is not None:
            held.set()

    async def _flowing(self) -> None:
        while (held := self._held) is not None:
            await held.wait()

    async def _handle(self, client: SocketStream) -> None:
        async with client:
            if self.refusing:
                return
            with CancelScope() as scope:
                self._links.append(scope)
                await self._flowing()
                async with await connect_tcp("127.0.0.1", self.target) as upstream:
                    async with create_task_group() as task_group:
                        task_group.start_soon(_pipe, client, upstream, task_group, self._flowing)
                        task_group.start_soon(_pipe, upstream, client, task_group, self._flowing)


async def _pipe(
    source: SocketStream,
    sink: SocketStream,
    task_group: TaskGroup,
    flowing: Callable[[], Awaitable[None]] | None = None,
) -> None:
    try:
        while True:
            if flowing is not None:
                await flowing()
            chunk = await source.receive()
            if flowing is not None:
                await flowing()
            await sink.send(chunk)
    except (BrokenResourceError, ClosedResourceError, EndOfStream):
        pass
    task_group.cancel_scope.cancel()
