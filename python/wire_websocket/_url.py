"""Where a WebSocket client connects: the original's `host` forms, mapped to a ws/wss URL."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import quote, urlencode, urlsplit

_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


def websocket_url(host: str, port: int, id: str) -> str:
    """`localhost`, `http://h`, `https://h`, `ws://h` or `wss://h`, plus a port and a room ID.

    ```py
    websocket_url("https://example.com", 443, "my room")  # "wss://example.com:443/my%20room"
    ```
    """
    scheme, sep, rest = host.partition("://")
    if not sep:
        scheme, rest = "ws", host
    ws_scheme = _SCHEMES.get(scheme.lower())
    if ws_scheme is None:
        raise ValueError(f"unsupported scheme in host {host!r}: use ws, wss, http or https")
    parts = urlsplit(f"{ws_scheme}://{rest}")
    hostname = parts.hostname or ""
    if ":" in hostname:
        hostname = f"[{hostname}]"
    path = parts.path.rstrip("/")
    return f"{ws_scheme}://{hostname}:{port}{path}/{quote(id, safe='/')}"


def cookie_header(
    cookies: Mapping[str, str] | Iterable[tuple[str, str]] | None,
) -> list[tuple[str, str]]:
    """A `Cookie` header from a mapping (an `httpx.Cookies` works too) or (name, value) pairs."""
    if cookies is None:
        return []
    items = cookies.items() if isinstance(cookies, Mapping) else cookies
    pairs = [f"{name}={value}" for name, value in items]
    return [("Cookie", "; ".join(pairs))] if pairs else []


def with_query(url: str, name: str, value: str) -> str:
    """`url` with the query parameter `name=value` added (form-encoded)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}{urlencode({name: value})}"
