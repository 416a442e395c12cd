"""Clients: a document kept in sync with a room through a native endpoint."""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from enum import StrEnum
from time import monotonic
from types import TracebackType
from typing import Any, Self

from anyio import Event, create_task_group, move_on_after, sleep
from anyio.abc import TaskGroup
from pycrdt import Awareness, Doc

from . import _delivery as delivery
from ._channel import AsyncChannel, Channel
from ._delivery import readable
from ._doc import Doc as WireDoc
from ._links import AsyncChannelLink, ChannelLink, Link, wait_link
from ._sync import DocSync
from ._wiredb import Endpoint

log = logging.getLogger("wiredb")

#: How long closing waits for queued updates to be sent and the peer to answer.
CLOSE_TIMEOUT = 5.0


class ConnectionStatus(StrEnum):
    """Where a client's connection stands (as y-websocket's provider says it)."""

    #: A connection is being opened (a first one, or again after one was lost).
    CONNECTING = "connecting"
    #: The peer answered: updates flow both ways.
    CONNECTED = "connected"
    #: No connection: waiting to reconnect, given up, or closed.
    DISCONNECTED = "disconnected"


#: Close codes after which a client does not reconnect: the server refused it or what it sent
#: (1002 protocol error, 1003 unsupported data, 1007 invalid data, 1008 policy violation, 1009
#: too big, 1010 missing extension), or the application said so (4000-4499: refused, kicked).
#: Reconnecting would be refused again, or resend what was refused.
FINAL_CLOSE_CODES = frozenset({1002, 1003, 1007, 1008, 1009, 1010, *range(4000, 4500)})


@dataclass(frozen=True)
class Reconnect:
    """How a client reconnects after its connection is lost: after a delay growing from
    `initial_delay` by `factor` up to `max_delay`, each shortened by a random part of up to
    `jitter` (so that the clients of a restarted server do not all come back at once), for at
    most `max_attempts` attempts in a row (None: forever). The delay starts over once a
    connection was synchronized again.

    ```py
    AsyncWebSocketClient("room", host="localhost", port=8000, reconnect=Reconnect(max_delay=30))
    ```
    """

    initial_delay: float = 0.1
    max_delay: float = 10.0
    factor: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.initial_delay < 0 or self.max_delay < self.initial_delay:
            raise ValueError("need 0 <= initial_delay <= max_delay")
        if self.factor < 1:
            raise ValueError("factor must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError("max_attempts must be >= 0")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt `attempt` (0 for the first after a loss)."""
        # Capped before it is raised to a power that could overflow.
        exponent = min(attempt, 64)
        base = min(self.max_delay, self.initial_delay * self.factor**exponent)
        return base * (1 - self.jitter * random.random())


#: What opens a link: a function returning a native endpoint, or an awaitable of one.
Connector = Callable[[], Endpoint | Awaitable[Endpoint]]


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
    With `reconnect` (wires that can open a connection again pass it), a lost connection is
    opened again: see `status`, `synchronized` and `unsent`.
    """

    def __init__(
        self,
        channel: AsyncChannel | Connector,
        doc: Doc[Any] | None = None,
        auto_push: bool = True,
        auto_pull: bool = True,
        *,
        reconnect: Reconnect | None = None,
    ) -> None:
        """
        Args:
            channel: The channel to sync over (or, for wires, a function opening a native
                endpoint).
            doc: The document to sync (a new one if None).
            auto_push: Send local changes as they are made; else on `push()`.
            auto_pull: Apply remote changes as they arrive; else on `pull()`.
            reconnect: Open the connection again when it is lost (not for a channel: it
                cannot be opened again).
        """
        if reconnect is not None and isinstance(channel, AsyncChannel):
            raise ValueError("a channel cannot be opened again: reconnect needs a wire")
        self._channel = channel
        self._doc: Doc[Any] = WireDoc() if doc is None else doc
        self._auto_push = auto_push
        self._auto_pull = auto_pull
        self._reconnect = reconnect
        self._synchronized = Event()
        self._sync: DocSync | None = None
        self._task_group: TaskGroup | None = None
        self._closed = Event()
        self._awareness: Awareness | None = None
        self._awareness_timer = False
        self._status = ConnectionStatus.DISCONNECTED
        self._status_observers: dict[int, Callable[[ConnectionStatus], None]] = {}
        self._next_observer = 0
        self._entered = False
        self._stopping = False
        self._close_reason: tuple[int, str] | None = None
        self._sent_waiters: list[Event] = []
        self._pulls: list[Pull] = []

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
        A client that never uses `awareness` sends and parses no awareness message. While
        disconnected the peers' states are dropped; on reconnection the local state is
        announced again and the peers' states arrive again.

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
        if not self._awareness_timer:
            self._awareness_timer = True
            task_group.start_soon(keep_awareness, awareness)

    @property
    def synchronized(self) -> Event:
        """Set once the document holds everything the peer had when it connected.

        While the client is disconnected this is a new, unset event, set again once the
        client reconnected and resynchronized: read the property again rather than keeping
        the event (`await client.synchronized.wait()` waits for the current connection).
        """
        return self._synchronized

    @property
    def status(self) -> ConnectionStatus:
        """Where the connection stands: connecting, connected or disconnected."""
        return self._status

    @property
    def read_only(self) -> bool:
        """The server said this client may not change the document (its changes stay local)."""
        return self._sync is not None and self._sync.denied is not None

    @property
    def close_reason(self) -> tuple[int, str] | None:
        """The close code and reason of the last connection that ended, if one did."""
        return self._close_reason

    @property
    def unsent(self) -> bool:
        """Whether local changes may not have reached the peer yet: changes waiting to be
        written to the connection (or for `push()` with `auto_push=False`), and changes made
        while disconnected or left unwritten by a lost connection, until the peer asked for
        them again after reconnecting. A change written just before a connection was lost can
        still be lost in transit; the resync after reconnecting carries it again (it sends the
        peer everything its state vector lacks)."""
        sync = self._sync
        return sync is not None and sync.unsent

    async def wait_sent(self) -> None:
        """Returns once `unsent` is false: local changes written to the connection (waiting
        for a reconnection if there is none). With `auto_push=False`, call `push()` first."""
        while self.unsent:
            event = Event()
            self._sent_waiters.append(event)
            if self._sync is not None:
                self._sync.endpoint.wake_when_sent()
            await event.wait()

    def _delivery_pending(self) -> bool:
        """Whether something this client sent or was sent waits in this process (see
        `wiredb.wait_delivered`)."""
        sync = self._sync
        if sync is None or sync.closed is not None:
            return False
        link = sync.endpoint
        if isinstance(link, Endpoint):
            return link.unsent or readable(link.fd)
        if isinstance(link, AsyncChannelLink):
            return link.delivery_pending
        return False

    def _check_sent(self, sync: DocSync) -> None:
        if not self._sent_waiters:
            return
        if sync.unsent:
            sync.endpoint.wake_when_sent()
            return
        waiters, self._sent_waiters = self._sent_waiters, []
        for event in waiters:
            event.set()

    def observe_status(self, callback: Callable[[ConnectionStatus], None]) -> int:
        """Calls `callback(status)` on every change of `status`; returns an id for
        `unobserve_status`."""
        self._next_observer += 1
        self._status_observers[self._next_observer] = callback
        return self._next_observer

    def unobserve_status(self, id: int) -> None:
        self._status_observers.pop(id, None)

    def _set_status(self, status: ConnectionStatus) -> None:
        if status is self._status:
            return
        self._status = status
        for callback in list(self._status_observers.values()):
            try:
                callback(status)
            except Exception:
                log.exception("a connection status observer failed")

    def push(self) -> None:
        """Sends the local changes made since the last push (with `auto_push=False`), merged
        into one update. It queues them and returns at once, as 0.7.1's did; `await
        client.wait_sent()` returns once they are written to the connection."""
        if self._sync is not None:
            self._sync.push()

    def pull(self) -> Pull:
        """Applies the remote changes received so far and asks the peer for the rest: once
        its answer is applied, the document holds everything the peer held when it read the
        request (an edit another client pushed just before is not missed). The answer is
        applied as it arrives; with `auto_pull=False`, the first one sets `synchronized`.

        As in 0.7.1 it can be called and forgotten (`client.pull()`); `await client.pull()`
        returns once the answer is applied. A pull outlives a lost connection: the next one's
        first sync answers it.

        Raises (when awaited):
            ConnectionError: the client closed, or lost its connection for good, first.
        """
        sync = self._sync
        pull = Pull()
        if sync is None or self._closed.is_set():
            pull.fail("the client is not connected")
            return pull
        pull.target, pull.sync = sync.pull(), sync
        self._pulls.append(pull)
        self._after_process(sync)
        return pull

    def _after_process(self, sync: DocSync) -> None:
        if sync.synced and not self._synchronized.is_set():
            self._synchronized.set()
        if self._pulls:
            waiting = []
            for pull in self._pulls:
                if pull.sync is sync and sync.pulled(pull.target):
                    pull.done.set()
                else:
                    waiting.append(pull)
            self._pulls = waiting

    def _fail_pulls(self, reason: str) -> None:
        pulls, self._pulls = self._pulls, []
        for pull in pulls:
            pull.fail(reason)

    async def _open_link(self, task_group: TaskGroup) -> Link:
        if isinstance(self._channel, AsyncChannel):
            link = AsyncChannelLink(self._channel)
            link.start(task_group)
            return link
        opened = self._channel()
        if inspect.isawaitable(opened):
            opened = await opened
        return opened

    def _attach(self, link: Link, previous: DocSync | None) -> DocSync:
        """Syncs the document over a new link (taking over from `previous`, if any)."""
        sync = DocSync(link, self._doc, self._auto_push, self._auto_pull)
        if previous is not None:
            # What the lost connection may not have delivered goes with the resync.
            sync.resync_pending = previous.unsent
            previous.stop()
            release(previous.endpoint)
        self._sync = sync
        sync.start()
        if self._pulls:
            # The new connection's first answer holds everything the peer has now.
            target = sync.adopt_pull()
            for pull in self._pulls:
                pull.sync, pull.target = sync, target
        if self._awareness is not None and self._task_group is not None:
            self._start_awareness(sync, self._task_group, self._awareness)
        if self._sent_waiters:
            sync.endpoint.wake_when_sent()
        return sync

    async def _pump(self, sync: DocSync, first: Event) -> None:
        """Handles what arrives on `sync`'s link until it is closed."""
        while sync.closed is None:
            await wait_link(sync.endpoint)
            batch = sync.endpoint.receive()
            if not batch:
                self._check_sent(sync)
                continue
            sync.process(batch)
            self._check_sent(sync)
            if sync.closed is None:
                self._set_status(ConnectionStatus.CONNECTED)
            self._after_process(sync)
            first.set()

    async def _run(self, sync: DocSync, first: Event) -> None:
        attempt = 0
        try:
            while True:
                await self._pump(sync, first)
                self._close_reason = sync.closed
                # A first connection that never synchronized is `__aenter__`'s to report.
                if self._stopping or self._reconnect is None:
                    return
                if not (self._entered or sync.synced):
                    return
                code, reason = sync.closed or (1006, "")
                if code in FINAL_CLOSE_CODES:
                    log.warning("closed with code %d (%s): not reconnecting", code, reason)
                    return
                self._set_status(ConnectionStatus.DISCONNECTED)
                if self._synchronized.is_set():
                    self._synchronized = Event()
                if sync.synced:
                    attempt = 0
                link = None
                while link is None:
                    if self._reconnect.max_attempts is not None:
                        if attempt >= self._reconnect.max_attempts:
                            log.warning("gave up reconnecting after %d attempts", attempt)
                            return
                    await sleep(self._reconnect.delay(attempt))
                    attempt += 1
                    link = await self._try_open()
                sync = self._attach(link, sync)
        finally:
            first.set()
            if not self._stopping and self._synchronized.is_set():
                # Disconnected for good (kicked, refused, not reconnecting): no longer in sync.
                self._synchronized = Event()
            self._set_status(ConnectionStatus.DISCONNECTED)
            self._closed.set()
            self._fail_pulls("the connection closed before the pull was answered")

    async def _try_open(self) -> Link | None:
        """Opens a new link; None (logged) if that failed at once."""
        assert self._task_group is not None
        self._set_status(ConnectionStatus.CONNECTING)
        try:
            return await self._open_link(self._task_group)
        except Exception as error:
            log.warning("could not reconnect: %r", error)
            self._set_status(ConnectionStatus.DISCONNECTED)
            return None

    async def __aenter__(self) -> AsyncClient:
        """Connects and waits for the first sync.

        Raises:
            ConnectionError: the first connection failed or closed before the document was
                synchronized (reconnecting starts only after a first success: a wrong address
                or a refused client fails at once).
        """
        task_group = create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        self._stopping = self._entered = False
        first = Event()
        try:
            self._set_status(ConnectionStatus.CONNECTING)
            try:
                link = await self._open_link(task_group)
            except OSError as error:
                raise ConnectionError(str(error)) from error
            sync = self._attach(link, None)
            task_group.start_soon(self._run, sync, first)
            # Connected once the peer's first message arrived; synchronized once its answer
            # is applied (a client that pulls by hand synchronizes on its first pull).
            await first.wait()
            if self._auto_pull:
                await wait_first(self._synchronized, self._closed)
            if sync.closed is not None and not sync.synced:
                code, reason = sync.closed
                raise ConnectionError(reason or f"connection closed with code {code}")
            self._entered = True
        except BaseException:
            await self._shutdown()
            raise
        delivery.track(self)
        return self

    async def _shutdown(self) -> None:
        delivery.untrack(self)
        sync, task_group = self._sync, self._task_group
        if task_group is None:
            return
        self._stopping = True
        self._task_group = None
        if sync is not None:
            sync.stop()
            if sync.closed is None:
                sync.awareness.close()
                sync.endpoint.close()
                with move_on_after(CLOSE_TIMEOUT, shield=True):
                    await self._closed.wait()
        self._sync = None
        self._fail_pulls("the client closed before the pull was answered")
        task_group.cancel_scope.cancel()
        await task_group.__aexit__(None, None, None)
        if sync is not None:
            release(sync.endpoint)
        self._set_status(ConnectionStatus.DISCONNECTED)

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
        """Whether a pull was answered, and the connection has not closed since."""
        sync = self._sync
        return sync is not None and sync.synced and sync.closed is None

    def _require(self) -> DocSync:
        if self._sync is None:
            raise RuntimeError("the client is not open: use it in a `with` block")
        return self._sync

    def pull(self, timeout: float | None = None) -> None:
        """Applies the remote changes received so far, asks the peer for the rest and blocks
        (without the GIL) until its answer is applied: then the document holds everything the
        peer held when it read the request. The first call synchronizes the document.

        Raises:
            ConnectionError: the connection closed before the answer came.
            TimeoutError: `timeout` seconds passed before the answer came.
        """
        sync = self._require()
        target = sync.pull()
        deadline = None if timeout is None else monotonic() + timeout
        while not sync.pulled(target):
            if sync.closed is not None:
                code, reason = sync.closed
                raise ConnectionError(reason or f"connection closed with code {code}")
            left = None if deadline is None else max(0.0, deadline - monotonic())
            if not self._wait(left) and left is not None:
                raise TimeoutError("the peer did not answer the pull in time")
            sync.apply_received()

    def push(self) -> None:
        """Sends the local changes made since the last push."""
        self._require().push()

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks (without holding the GIL) until something arrives from the peer, then applies
        what arrived (no round trip, unlike `pull()`).

        Returns:
            False if `timeout` seconds passed with nothing new.
        """
        sync = self._require()
        if not self._wait(timeout):
            return False
        sync.apply_received()
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


class Pull:
    """What `AsyncClient.pull()` returns: awaiting it returns once the peer's answer to the
    pull is applied (or raises `ConnectionError` if it never will be). Not awaiting it is
    fine: the pull happens all the same."""

    def __init__(self) -> None:
        self.done = Event()
        self.sync: DocSync | None = None
        self.target = 0
        self._failure: str | None = None

    def fail(self, reason: str) -> None:
        self._failure = reason
        self.done.set()

    def __await__(self) -> Generator[Any, None, None]:
        return self._wait().__await__()

    async def _wait(self) -> None:
        await self.done.wait()
        if self._failure is not None:
            raise ConnectionError(self._failure)


def release(link: Link) -> None:
    """Closes a finished native link's descriptor now, rather than when it is collected (a
    cancelled task may keep it in a reference cycle)."""
    if isinstance(link, Endpoint):
        link.release()


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
    """Gives a wire's async client the `AsyncClient` API of its inner client, entering and
    leaving included."""

    _client: AsyncClient

    async def __aenter__(self) -> Self:
        await self._client.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self._client.__aexit__(exc_type, exc_val, exc_tb)

    @property
    def doc(self) -> Doc[Any]:
        return self._client.doc

    @property
    def synchronized(self) -> Event:
        """Set once synchronized; a new unset event while disconnected (see
        `AsyncClient.synchronized`)."""
        return self._client.synchronized

    @property
    def status(self) -> ConnectionStatus:
        """connecting, connected or disconnected."""
        return self._client.status

    @property
    def unsent(self) -> bool:
        """Whether local changes may not have reached the peer yet (see `AsyncClient.unsent`)."""
        return self._client.unsent

    async def wait_sent(self) -> None:
        """Returns once `unsent` is false (see `AsyncClient.wait_sent`)."""
        await self._client.wait_sent()

    @property
    def read_only(self) -> bool:
        """The server said this client may not change the document."""
        return self._client.read_only

    @property
    def close_reason(self) -> tuple[int, str] | None:
        """The close code and reason of the last connection that ended, if one did."""
        return self._client.close_reason

    def observe_status(self, callback: Callable[[ConnectionStatus], None]) -> int:
        """Calls `callback(status)` on every change of `status`."""
        return self._client.observe_status(callback)

    def unobserve_status(self, id: int) -> None:
        self._client.unobserve_status(id)

    @property
    def awareness(self) -> Awareness:
        """The room's awareness, a `pycrdt.Awareness` (see `AsyncClient.awareness`)."""
        return self._client.awareness

    def push(self) -> None:
        self._client.push()

    def pull(self) -> Pull:
        """Pulls (see `AsyncClient.pull`): `await client.pull()` returns once the peer's
        answer is applied."""
        return self._client.pull()


class ClientMixin:
    """Gives a wire's blocking client the `Client` API of its inner client, entering and
    leaving included."""

    _client: Client

    def __enter__(self) -> Self:
        self._client.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self._client.__exit__(exc_type, exc_val, exc_tb)

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
