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
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol
from urllib.parse import parse_qs

from anyio import CancelScope, move_on_after, wait_readable
from anyio.abc import TaskGroup

from wiredb._log import bounded_traceback, clipped, describe

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
    #: The cookies of the `Cookie` header(s): `name=value` pairs split at `;`, a value in
    #: double quotes unquoted; of a name given twice, the last value.
    cookies: Mapping[str, str]
    #: The peer's address and port (a proxy's, behind one: see `x-forwarded-for`).
    peer: tuple[str, int]
    #: The raw query string.
    query_string: str = field(default="", repr=False)

    @classmethod
    def _from_native(cls, native: NativeRequest) -> Request:
        id, path, room, query, raw_headers, host, port = native
        # Joined once each, not by repeated concatenation: linear in what the client sent.
        values: dict[str, list[str]] = {}
        for name, value in raw_headers:
            values.setdefault(name.lower(), []).append(value)
        headers = {name: ", ".join(each) for name, each in values.items()}
        # Each Cookie header parsed on its own ("; " separates pairs, not ", ").
        cookies: dict[str, str] = {}
        for header in values.get("cookie", ()):
            cookies.update(parse_cookies(header))
        return cls(
            id=id,
            path=path,
            room=room,
            query=MappingProxyType(parse_qs(query, keep_blank_values=True)),
            headers=MappingProxyType(headers),
            cookies=MappingProxyType(cookies),
            peer=(host, port),
            query_string=query,
        )


def parse_cookies(header: str) -> dict[str, str]:
    """The cookies of one `Cookie` header, in one pass: linear in its length whatever it holds.

    Not `http.cookies`: before CPython 3.11.10 its unquoting is quadratic in backslashes
    (CVE-2024-7592), and it runs on the event loop for every connection, before any hook.
    Pairs are split at `;`, names and values stripped; a pair without `=` or a name is
    skipped; a value in double quotes is unquoted (`\\"` and `\\ooo` octal escapes, as
    `http.cookies` writes them).
    """
    cookies: dict[str, str] = {}
    start, end = 0, len(header)
    while start < end:
        # Every search starts where the last one stopped: each character is looked at once
        # by `;` and at most once more by `=`.
        stop = header.find(";", start)
        if stop < 0:
            stop = end
        equals = header.find("=", start, stop)
        if equals >= 0:
            name = header[start:equals].strip()
            if name:
                cookies[name] = _unquote(header[equals + 1 : stop].strip())
        start = stop + 1
    return cookies


# A backslash and what it escapes: three octal digits, or any one character. Fixed length,
# tried once per position: `re.sub` with it is linear.
_ESCAPE = re.compile(r"\\(?:([0-3][0-7][0-7])|(.))", re.DOTALL)


def _unescape(match: re.Match[str]) -> str:
    octal, char = match.groups()
    return chr(int(octal, 8)) if octal is not None else char


def _unquote(value: str) -> str:
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    inner = value[1:-1]
    return _ESCAPE.sub(_unescape, inner) if "\\" in inner else inner


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
            try:
                request = Request._from_native(native)
            except Exception as error:
                # One odd request must not end the loop that decides every other one.
                log.error("could not read the request %s: %s", clipped(native[1]), describe(error))
                gate.decide(native[0], False, False, None, 1011, "authorization failed")
                continue
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
        log.debug("%s stopped waiting: its authorization hook was cancelled", clipped(request.path))


async def decide(gate: Gate, authorize: Authorize, timeout: float, request: Request) -> None:
    """Runs the hook for one request, for at most `timeout` seconds, and answers. A hook that
    fails denies (1011); one that takes too long is cancelled, and the server closes the
    connection with 1013 at its own deadline."""
    decision: Decision | None = None
    with move_on_after(timeout):
        try:
            outcome = authorize(request)
            decision = await outcome if inspect.isawaitable(outcome) else outcome
        except Exception as error:
            log.error(
                "the authorization hook failed for %s:\n%s",
                clipped(request.path),
                bounded_traceback(error),
            )
            decision = Deny(1011, "authorization failed")
    if decision is None:
        log.warning(
            "the authorization hook did not answer in %s s for %s", timeout, clipped(request.path)
        )
        return
    try:
        match decision:
            case Allow(identity=identity):
                gate.decide(request.id, True, False, identity, 0, "")
            case ReadOnly(identity=identity):
                gate.decide(request.id, True, True, identity, 0, "")
            case Deny(code=code, reason=reason):
                gate.decide(request.id, False, False, None, code, reason)
            case other:
                raise TypeError(f"{clipped(other)} is not Allow, ReadOnly or Deny")
    except (TypeError, ValueError, OverflowError) as error:
        # A decision the server cannot take (not a decision, an identity that is not a str):
        # this connection is refused, the server goes on.
        log.error("the authorization hook's answer for %s: %s", clipped(request.path), error)
        gate.decide(request.id, False, False, None, 1011, "authorization failed")


def check_close(code: int, reason: str) -> None:
    """Raises ValueError unless `code` and `reason` can go in a close frame."""
    _check_close(code, reason)
