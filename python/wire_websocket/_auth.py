"""Who may connect to a server, and what they may do: the request an authorization hook is
shown, its decisions, and the connections it let in (to close or make read-only later).

The native server asks Python through an eventfd-backed queue (`auth_fd`, `auth_events()`);
each request is decided by the hook in a task of its own, bounded by a timeout, and the answer
goes back with one native call. A request whose connection stops waiting first (closed at the
pre-authorization cap, gone, timed out, the server stopping) comes back on the same queue as
withdrawn, and its hook is cancelled. Rust never calls Python.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from types import MappingProxyType
from typing import Protocol
from urllib.parse import parse_qs

from anyio import CancelScope, move_on_after, wait_readable
from anyio.abc import TaskGroup

log = logging.getLogger("wire_websocket")

#: Close codes a refused or closed connection gets by default.
FORBIDDEN = 4403
CLOSED_BY_SERVER = 4000

#: What the native server hands over for a request: (id, path, room, query, headers, peer
#: host, peer port).
NativeRequest = tuple[int, str, str, str, list[tuple[str, str]], str, int]
#: ... and for a connection: the request, its identity, whether it is read-only, whether it
#: joined its room yet.
NativeConnection = tuple[NativeRequest, str | None, bool, bool]


@dataclass(frozen=True)
class Request:
    """What a connection asked for, as its WebSocket handshake said.

    ```py
    async def authorize(request: Request) -> Decision:
        user = await sessions.user(request.cookies.get("session"))
        if user is None:
            return Deny(4401, "log in first")
        return Allow(identity=user.name) if user.may_edit(request.room) else ReadOnly()
    ```
    """

    #: Unique among the server's connections.
    id: int
    #: The URL path as sent (percent-encoded), without the query.
    path: str
    #: The room ID: the path without its leading `/`, percent-decoded.
    room: str
    #: The query parameters, each with all its values (`?a=1&a=2` gives `{"a": ["1", "2"]}`).
    query: Mapping[str, list[str]]
    #: The headers, names in lower case (repeated headers joined with ", ").
    headers: Mapping[str, str]
    #: The cookies of the `Cookie` header.
    cookies: Mapping[str, str]
    #: The peer's address and port (a proxy's, behind one: see `x-forwarded-for`).
    peer: tuple[str, int]
    #: The raw query string.
    query_string: str = field(default="", repr=False)

    @classmethod
    def _from_native(cls, native: NativeRequest) -> Request:
        id, path, room, query, raw_headers, host, port = native
        headers: dict[str, str] = {}
        for name, value in raw_headers:
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return cls(
            id=id,
            path=path,
            room=room,
            query=MappingProxyType(parse_qs(query, keep_blank_values=True)),
            headers=MappingProxyType(headers),
            cookies=MappingProxyType(_cookies(headers.get("cookie", ""))),
            peer=(host, port),
            query_string=query,
        )


def _cookies(header: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        # A malformed header: keep the pairs that read plainly.
        pairs = (part.strip().partition("=") for part in header.split(";"))
        return {name: value for name, sep, value in pairs if sep and name}
    return {name: morsel.value for name, morsel in jar.items()}


@dataclass(frozen=True)
class Allow:
    """Let the connection in, read-write. `identity` names who it is (see `Connection`)."""

    identity: str | None = None


@dataclass(frozen=True)
class ReadOnly:
    """Let the connection in, read-only: it is sent the document and its live updates, and
    what it sends changes nothing (it is told so with a y-protocols permission-denied message).
    Its awareness (cursor, name) still reaches the others: a viewer is present."""

    identity: str | None = None


@dataclass(frozen=True)
class Deny:
    """Close the connection with `code` and `reason`, before its room is opened.

    Codes 4000-4499 tell wiredb's clients not to reconnect (they would be refused again);
    the default is 4403 (forbidden).
    """

    code: int = FORBIDDEN
    reason: str = "forbidden"

    def __post_init__(self) -> None:
        _check_close(self.code, self.reason)


Decision = Allow | ReadOnly | Deny
#: An authorization hook: given the request, says who gets in (sync functions work too).
Authorize = Callable[[Request], Awaitable[Decision] | Decision]


def _check_close(code: int, reason: str) -> None:
    # 1004-1006 and 1015 are reserved: they may not be sent in a close frame.
    if not 1000 <= code <= 4999 or code in (1004, 1005, 1006, 1015):
        raise ValueError(f"{code} is not a close code one may send (use 4000-4999)")
    if len(reason.encode()) > 123:
        raise ValueError("a close reason is at most 123 bytes")


@dataclass(frozen=True)
class Connection:
    """A connection that was let into a room."""

    request: Request
    #: Who it is, as the hook (`Allow(identity=...)`) or its token (`subject`) said.
    identity: str | None
    read_only: bool
    #: Whether it joined its room yet (else the room is opening).
    joined: bool

    @classmethod
    def _from_native(cls, native: NativeConnection) -> Connection:
        request, identity, read_only, joined = native
        return cls(Request._from_native(request), identity, read_only, joined)


class Gate(Protocol):
    """The native server's side of authorization."""

    @property
    def auth_fd(self) -> int: ...
    def auth_events(self) -> tuple[list[NativeRequest], list[int]]: ...
    def decide(
        self, id: int, allow: bool, read_only: bool, identity: str | None, code: int, reason: str
    ) -> bool: ...


async def serve_authorizations(
    gate: Gate, authorize: Authorize, timeout: float, task_group: TaskGroup
) -> None:
    """Decides each request the native server queues, each in a task of its own, and cancels
    the hook of a request the server withdraws (its connection no longer waits)."""
    deciding: dict[int, CancelScope] = {}
    while True:
        await wait_readable(gate.auth_fd)
        requests, withdrawn = gate.auth_events()
        for id in withdrawn:
            scope = deciding.pop(id, None)
            if scope is not None:
                # Cancelled even if its task has not entered it yet.
                scope.cancel()
        for native in requests:
            request = Request._from_native(native)
            scope = deciding[request.id] = CancelScope()
            task_group.start_soon(_decide_in, scope, deciding, gate, authorize, timeout, request)


async def _decide_in(
    scope: CancelScope,
    deciding: dict[int, CancelScope],
    gate: Gate,
    authorize: Authorize,
    timeout: float,
    request: Request,
) -> None:
    try:
        with scope:
            await decide(gate, authorize, timeout, request)
    finally:
        if deciding.get(request.id) is scope:
            del deciding[request.id]
    if scope.cancelled_caught:
        log.debug("%s stopped waiting: its authorization hook was cancelled", request.path)


async def decide(gate: Gate, authorize: Authorize, timeout: float, request: Request) -> None:
    """Runs the hook for one request, for at most `timeout` seconds, and answers. A hook that
    fails denies (1011); one that takes too long is cancelled, and the server closes the
    connection with 1013 at its own deadline."""
    decision: Decision | None = None
    with move_on_after(timeout):
        try:
            outcome = authorize(request)
            decision = await outcome if inspect.isawaitable(outcome) else outcome
        except Exception:
            log.exception("the authorization hook failed for %s", request.path)
            decision = Deny(1011, "authorization failed")
    if decision is None:
        log.warning("the authorization hook did not answer in %s s for %s", timeout, request.path)
        return
    match decision:
        case Allow(identity=identity):
            gate.decide(request.id, True, False, identity, 0, "")
        case ReadOnly(identity=identity):
            gate.decide(request.id, True, True, identity, 0, "")
        case Deny(code=code, reason=reason):
            gate.decide(request.id, False, False, None, code, reason)
        case other:
            log.error("the authorization hook returned %r, not Allow, ReadOnly or Deny", other)
            gate.decide(request.id, False, False, None, 1011, "authorization failed")


def check_close(code: int, reason: str) -> None:
    """Raises ValueError unless `code` and `reason` can go in a close frame."""
    _check_close(code, reason)
