"""WebSocket clients: a `pycrdt.Doc` synced with a room of a y-websocket server."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from pycrdt import Doc

from wiredb import AsyncClient, AsyncClientMixin, Client, ClientMixin
from wiredb._wiredb import Endpoint

from ._url import cookie_header, websocket_url

Cookies = Mapping[str, str] | Iterable[tuple[str, str]]


class AsyncWebSocketClient(AsyncClientMixin):
    """A document synced with a room of a WebSocket server, on asyncio or trio.

    ```py
    async with AsyncWebSocketClient("my_id", host="localhost", port=8000) as client:
        text = client.doc.get("text", Text)
        text += "Hello"
    ```
    On entry the document is synchronized (with `auto_pull`); on exit, every change made before
    has been sent.
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
        """
        url = websocket_url(host, port, id)
        headers = cookie_header(cookies)
        self._client = AsyncClient(
            lambda: Endpoint.connect(url, headers), doc, auto_push, auto_pull
        )

    async def __aenter__(self) -> AsyncWebSocketClient:
        await self._client.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self._client.__aexit__(exc_type, exc_val, exc_tb)


class WebSocketClient(ClientMixin):
    """A document synced with a room of a WebSocket server, without an event loop.

    ```py
    with WebSocketClient("my_id", host="localhost", port=8000) as client:
        client.pull()  # waits for the sync
        client.doc.get("text", Text).insert(0, "Hello")
        client.push()
    ```
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
    ) -> None:
        url = websocket_url(host, port, id)
        headers = cookie_header(cookies)
        self._client = Client(lambda: Endpoint.connect(url, headers), doc, auto_push)

    def __enter__(self) -> WebSocketClient:
        self._client.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self._client.__exit__(exc_type, exc_val, exc_tb)
