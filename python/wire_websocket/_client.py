"""WebSocket clients: a `pycrdt.Doc` synced with a room of a y-websocket server."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal

from pycrdt import Doc

from wiredb import AsyncClient, AsyncClientMixin, Client, ClientMixin, Reconnect
from wiredb._client import FINAL_CLOSE_CODES as FINAL_CLOSE_CODES
from wiredb._wiredb import Endpoint, frame_token

from ._url import cookie_header, websocket_url, with_query

Cookies = Mapping[str, str] | Iterable[tuple[str, str]]
#: A token, or a function giving one for each connection (plain or async: a fresh token for
#: each reconnection).
Token = str | Callable[[], str | Awaitable[str]]
TokenIn = Literal["message", "query"]

#: Seconds without hearing from the server before it is pinged (any RFC 6455 server answers).
PING_INTERVAL = 20.0
#: Seconds without hearing anything from the server (a pong included) before the connection
#: counts as lost: longer than the 30 s between the pings of wiredb's and y-websocket's servers.
IDLE_TIMEOUT = 60.0


def _check_keepalive(ping_interval: float | None, idle_timeout: float | None) -> None:
    for name, value in (("ping_interval", ping_interval), ("idle_timeout", idle_timeout)):
        if value is not None and not 0 < value < float("inf"):
            raise ValueError(f"{name} must be a positive number of seconds or None, not {value}")
    if ping_interval is not None and idle_timeout is not None and idle_timeout <= ping_interval:
        # It would give up on a server that does not ping before asking it for a pong.
        raise ValueError("idle_timeout must be longer than ping_interval")


def _url(host: str, port: int, id: str, params: Mapping[str, str] | None) -> str:
    url = websocket_url(host, port, id)
    for name, value in (params or {}).items():
        url = with_query(url, name, value)
    return url


def _open(
    url: str,
    headers: list[tuple[str, str]],
    token: str | None,
    where: TokenIn,
    ping_interval: float | None,
    idle_timeout: float | None,
) -> Endpoint:
    if token is not None and where == "query":
        url = with_query(url, "token", token)
    endpoint = Endpoint.connect(
        url, headers, ping_interval=ping_interval, idle_timeout=idle_timeout
    )
    if token is not None and where == "message":
        # Before anything else: the server reads a token only at the start of the first frame.
        endpoint.send_frame(frame_token(token))
    return endpoint


class AsyncWebSocketClient(AsyncClientMixin):
    """A document synced with a room of a WebSocket server, on asyncio or trio.

    ```py
    async with AsyncWebSocketClient("my_id", host="localhost", port=8000) as client:
        text = client.doc.get("text", Text)
        text += "Hello"
    ```
    On entry the document is synchronized (with `auto_pull`); on exit, every change made before
    has been sent (if connected).

    A lost connection is opened again (`reconnect`), with a delay that grows and is jittered;
    meanwhile the document can still be edited, and once reconnected the edits reach the room
    and the room's reach the document. `status` says where the connection stands
    (`observe_status` follows it), `synchronized` is unset while disconnected, and `unsent` says
    whether local edits may not have reached the room yet. A client that the server refused or
    closed for good (codes 1002, 1003, 1007-1010 and 4000-4499, see `FINAL_CLOSE_CODES`) does
    not reconnect. If the first connection fails, entering raises `ConnectionError` at once:
    reconnecting starts only once a connection worked.

    A connection that died silently (a NAT mapping expired, the network went away) is noticed
    by the keepalive: the server is pinged after `ping_interval` seconds without a word from
    it, and the connection counts as lost (code 1006, then reconnected) after `idle_timeout`
    seconds without anything heard, a pong included.
    """

    def __init__(
        self,
        id: str = "",
        doc: Doc[Any] | None = None,
        auto_push: bool = True,
        auto_pull: bool = True,
        *,
        host: str,
        port: int,
        cookies: Cookies | None = None,
        params: Mapping[str, str] | None = None,
        token: Token | None = None,
        token_in: TokenIn = "message",
        reconnect: Reconnect | bool = True,
        ping_interval: float | None = PING_INTERVAL,
        idle_timeout: float | None = IDLE_TIMEOUT,
    ) -> None:
        """
        Args:
            id: The room ID.
            doc: The document to sync (a new one if None).
            auto_push: Send local changes as they are made; else on `push()`.
            auto_pull: Apply remote changes as they arrive; else on `pull()`.
            host: `localhost`, `http://…`, `https://…`, `ws://…` or `wss://…`.
            port: The server's port.
            cookies: Sent with the WebSocket handshake.
            params: Query parameters of the URL (as y-websocket's `params`).
            token: An access token (see `mint_token`), or a function returning one, called
                for each connection.
            token_in: Where the token goes: `"message"`, a y-protocols auth message sent
                first (kept out of URLs and their logs), or `"query"`, the `token` query
                parameter (what other y-websocket servers may expect).
            reconnect: How to reconnect after the connection is lost (`True`: `Reconnect()`'s
                defaults; `False`: never).
            ping_interval: Seconds without hearing from the server before pinging it (None:
                never ping).
            idle_timeout: Seconds without hearing anything from the server, a pong included,
                before the connection counts as lost; also how long opening a connection may
                take (None: wait forever). Longer than `ping_interval`.
        """
        url = _url(host, port, id, params)
        headers = cookie_header(cookies)
        if token_in not in ("message", "query"):
            raise ValueError(f"token_in must be 'message' or 'query', not {token_in!r}")
        _check_keepalive(ping_interval, idle_timeout)

        async def connect() -> Endpoint:
            current = token() if callable(token) else token
            if inspect.isawaitable(current):
                current = await current
            return _open(url, headers, current, token_in, ping_interval, idle_timeout)

        policy = Reconnect() if reconnect is True else reconnect or None
        self._client = AsyncClient(connect, doc, auto_push, auto_pull, reconnect=policy)


class WebSocketClient(ClientMixin):
    """A document synced with a room of a WebSocket server, without an event loop.

    ```py
    with WebSocketClient("my_id", host="localhost", port=8000) as client:
        client.pull()  # waits for the sync
        client.doc.get("text", Text).insert(0, "Hello")
        client.push()
    ```
    It does not reconnect: a lost connection ends it (`pull()` then raises `ConnectionError`
    if it was not synchronized yet). A silently dead connection counts as lost after
    `idle_timeout` seconds (the keepalive of `AsyncWebSocketClient`).
    """

    def __init__(
        self,
        id: str = "",
        doc: Doc[Any] | None = None,
        auto_push: bool = False,
        *,
        host: str,
        port: int,
        cookies: Cookies | None = None,
        params: Mapping[str, str] | None = None,
        token: str | None = None,
        token_in: TokenIn = "message",
        ping_interval: float | None = PING_INTERVAL,
        idle_timeout: float | None = IDLE_TIMEOUT,
    ) -> None:
        url = _url(host, port, id, params)
        headers = cookie_header(cookies)
        _check_keepalive(ping_interval, idle_timeout)
        self._client = Client(
            lambda: _open(url, headers, token, token_in, ping_interval, idle_timeout),
            doc,
            auto_push,
        )
