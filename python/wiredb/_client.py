"""Clients: a document kept in sync with a room through a native endpoint."""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import monotonic
from types import TracebackType
from typing import Any

from anyio import Event, create_task_group, move_on_after
from anyio.abc import TaskGroup
from pycrdt import Awareness, Doc

from ._channel import AsyncChannel, Channel
from ._doc import Doc as WireDoc
from ._links import AsyncChannelLink, ChannelLink, Link, wait_link
from ._sync import DocSync
from ._wiredb import Endpoint

log = logging.getLogger("wiredb")

#: How long closing waits for queued updates to be sent and the peer to answer.
CLOSE_TIMEOUT = 5.0


class AsyncClient:
    """A document kept in sync over a channel, on asyncio or trio.

    Wires build it for you (`AsyncWebSocketClient`...); use it directly to sync over a transport
    of your own, any `AsyncChannel`. It must be used as an async context manager; on entry it is
    synchronized (with `auto_pull`), on exit every local change made before has been sent.

    ```py
    async with AsyncClient(MyChannel(...)) as client:
        client.doc.get("text", Text).insert(0, "Hello")
        client.awareness.set_local_state({"user": "alice", "cursor": 5})
    ```
    """

    def __init__(
        self,
        channel: AsyncChannel | Callable[[], Endpoint],
        doc: Doc[Any] | None = None,
        auto_push: bool = True,
        auto_pull: bool = True,
    ) -> None:
        """
        Args:
            channel: The channel to sync over (or, for wires, a function opening a native
                endpoint).
            doc: The document to sync (a new one if None).
            auto_push: Send local changes as they are made; else on `push()`.
            auto_pull: Apply remote changes as they arrive; else on `pull()`.
        """
        self._channel = channel
        self._doc: Doc[Any] = WireDoc() if doc is None else doc
        self._auto_push = auto_push
        self._auto_pull = auto_pull
        self._synchronized = Event()
        self._sync: DocSync | None = None
        self._task_group: TaskGroup | None = None
        self._closed = Event()
        self._awareness: Awareness | None = None

    @property
    def doc(self) -> Doc[Any]:
        return self._doc

    @property
    def awareness(self) -> Awareness:
        """The room's awareness: who is there and their cursors, user names... A
        `pycrdt.Awareness` of this client's document, synced from its first use on.

        Set the local state with `set_local_state()`, read the peers' in `states` (by client
        ID), follow changes with `observe()`. From first use, the local state (`{}` at first,
        as in Yjs) is announced, sent on each change and renewed every 15 s; peers' states
        arrive as they change, and are removed when the server says their client left or
        after 30 s without a renewal. When this client closes, its peers are told it left.
        A client that never uses `awareness` sends and parses no awareness message.

        ```py
        async with AsyncWebSocketClient("room", host="localhost", port=8000) as client:
            client.awareness.set_local_state({"user": {"name": "alice"}, "cursor": 3})
            client.awareness.observe(lambda topic, event: print(topic, event))
            me = client.doc.client_id
            others = {id: s for id, s in client.awareness.states.items() if id != me}
        ```
        """
        if self._awareness is None:
            self._awareness = Awareness(self._doc)
            if self._sync is not None and self._task_group is not None:
                self._start_awareness(self._sync, self._task_group, self._awareness)
        return self._awareness

    def _start_awareness(self, sync: DocSync, task_group: TaskGroup, awareness: Awareness) -> None:
        sync.awareness.activate(awareness)
        task_group.start_soon(keep_awareness, awareness)

    @property
    def synchronized(self) -> Event:
        """Set once the document holds everything the peer had when it connected."""
        return self._synchronized

    def push(self) -> None:
        """Sends the local changes made since the last push (with `auto_push=False`)."""
        if self._sync is not None:
            self._sync.push()

    def pull(self) -> None:
        """Applies every remote change received so far (with `auto_pull=False`)."""
        if self._sync is not None:
            self._sync.pull()
            self._after_process(self._sync)

    def _after_process(self, sync: DocSync) -> None:
        if sync.synced and not self._synchronized.is_set():
            self._synchronized.set()

    async def _run(self, sync: DocSync, first: Event) -> None:
        try:
            while sync.closed is None:
                await wait_link(sync.endpoint)
                batch = sync.endpoint.receive()
                if not batch:
                    continue
                sync.process(batch)
                self._after_process(sync)
                first.set()
        finally:
            first.set()
            self._closed.set()

    async def __aenter__(self) -> AsyncClient:
        task_group = create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        link: Link
        if isinstance(self._channel, AsyncChannel):
            link = AsyncChannelLink(self._channel)
            link.start(task_group)
        else:
            link = self._channel()
        sync = DocSync(link, self._doc, self._auto_push, self._auto_pull)
        self._sync = sync
        sync.start()
        first = Event()
        task_group.start_soon(self._run, sync, first)
        if self._awareness is not None:
            self._start_awareness(sync, task_group, self._awareness)
        try:
            # Connected once the peer's first message arrived; synchronized once its answer
            # is applied (a client that pulls by hand synchronizes on its first pull).
            await first.wait()
            if self._auto_pull:
                await wait_first(self._synchronized, self._closed)
            if sync.closed is not None and not sync.synced:
                code, reason = sync.closed
                raise ConnectionError(reason or f"connection closed with code {code}")
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def _shutdown(self) -> None:
        sync, task_group = self._sync, self._task_group
        if sync is None or task_group is None:
            return
        self._sync = self._task_group = None
        sync.stop()
        if sync.closed is None:
            sync.awareness.close()
            sync.endpoint.close()
            with move_on_after(CLOSE_TIMEOUT, shield=True):
                await self._closed.wait()
        task_group.cancel_scope.cancel()
        await task_group.__aexit__(None, None, None)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self._shutdown()


class Client:
    """A document kept in sync over a channel, without an event loop.

    Wires build it for you (`WebSocketClient`); use it directly over any `Channel`. `pull()`
    blocks (without holding the GIL) until the document is synchronized, then applies whatever
    has arrived; `push()` sends local changes (automatically with `auto_push=True`).

    ```py
    with WebSocketClient(host="localhost", port=8000) as client:
        client.pull()
        client.doc.get("text", Text).insert(0, "Hello")
        client.push()
    ```
    """

    def __init__(
        self,
        channel: Channel | Callable[[], Endpoint],
        doc: Doc[Any] | None = None,
        auto_push: bool = False,
    ) -> None:
        """
        Args:
            channel: The channel to sync over (or, for wires, a function opening a native
                endpoint).
            doc: The document to sync (a new one if None).
            auto_push: Send local changes as they are made; else on `push()`.
        """
        self._channel = channel
        self._doc: Doc[Any] = WireDoc() if doc is None else doc
        self._auto_push = auto_push
        self._sync: DocSync | None = None
        self._link: Endpoint | ChannelLink | None = None

    @property
    def doc(self) -> Doc[Any]:
        return self._doc

    @property
    def synchronized(self) -> bool:
        return self._sync is not None and self._sync.synced

    def _require(self) -> DocSync:
        if self._sync is None:
            raise RuntimeError("the client is not open: use it in a `with` block")
        return self._sync

    def pull(self, timeout: float | None = None) -> None:
        """Applies the remote changes received so far; the first call waits for the sync.

        Raises:
            ConnectionError: the connection closed before the document was synchronized.
            TimeoutError: `timeout` seconds passed before the document was synchronized.
        """
        sync = self._require()
        sync.pull()
        deadline = None if timeout is None else monotonic() + timeout
        while not sync.synced:
            if sync.closed is not None:
                code, reason = sync.closed
                raise ConnectionError(reason or f"connection closed with code {code}")
            left = None if deadline is None else max(0.0, deadline - monotonic())
            if not self._wait(left) and left is not None:
                raise TimeoutError("the document was not synchronized in time")
            sync.pull()

    def push(self) -> None:
        """Sends the local changes made since the last push."""
        self._require().push()

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks (without holding the GIL) until something arrives from the peer, then pulls.

        Returns:
            False if `timeout` seconds passed with nothing new.
        """
        self._require()
        if not self._wait(timeout):
            return False
        self.pull()
        return True

    def __enter__(self) -> Client:
        link = ChannelLink(self._channel) if isinstance(self._channel, Channel) else self._channel()
        sync = DocSync(link, self._doc, self._auto_push, auto_pull=False)
        sync.start()
        self._sync, self._link = sync, link
        return self

    def _wait(self, timeout: float | None) -> bool:
        return self._link is not None and self._link.wait(timeout)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        sync = self._sync
        if sync is None:
            return
        sync.stop()
        if sync.closed is None:
            sync.endpoint.close()
            sync.process(sync.endpoint.receive())
            deadline = monotonic() + CLOSE_TIMEOUT
            while sync.closed is None:
                left = deadline - monotonic()
                if left <= 0 or not self._wait(left):
                    break
                sync.process(sync.endpoint.receive())
        self._sync = self._link = None


async def keep_awareness(awareness: Awareness) -> None:
    """Runs pycrdt's awareness timer (renews the local state, drops silent peers) until
    cancelled, and leaves it stopped so that the awareness can be started again."""
    started = False
    try:
        async with create_task_group() as task_group:
            try:
                await task_group.start(awareness.start)
            except RuntimeError:
                log.debug("the awareness timer was started elsewhere; leaving it to that")
                return
            started = True
    finally:
        if started:
            await awareness.stop()


async def wait_first(*events: Event) -> None:
    """Returns as soon as one of the events is set."""
    async with create_task_group() as task_group:

        async def wait(event: Event) -> None:
            await event.wait()
            task_group.cancel_scope.cancel()

        for event in events:
            task_group.start_soon(wait, event)


class AsyncClientMixin:
    """Gives a wire's async client the `AsyncClient` API of its inner client."""

    _client: AsyncClient

    @property
    def doc(self) -> Doc[Any]:
        return self._client.doc

    @property
    def synchronized(self) -> Event:
        return self._client.synchronized

    @property
    def awareness(self) -> Awareness:
        """The room's awareness, a `pycrdt.Awareness` (see `AsyncClient.awareness`)."""
        return self._client.awareness

    def push(self) -> None:
        self._client.push()

    def pull(self) -> None:
        self._client.pull()


class ClientMixin:
    """Gives a wire's blocking client the `Client` API of its inner client."""

    _client: Client

    @property
    def doc(self) -> Doc[Any]:
        return self._client.doc

    @property
    def synchronized(self) -> bool:
        return self._client.synchronized

    def push(self) -> None:
        self._client.push()

    def pull(self) -> None:
        self._client.pull()

    def wait(self, timeout: float | None = None) -> bool:
        return self._client.wait(timeout)
