"""Where a WebSocket client connects: every `host` form the original accepts."""

from __future__ import annotations

import pytest

from wire_websocket._url import websocket_url


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("localhost", "ws://localhost:8000/room"),
        ("127.0.0.1", "ws://127.0.0.1:8000/room"),
        ("http://example.com", "ws://example.com:8000/room"),
        ("https://example.com", "wss://example.com:8000/room"),
        ("ws://example.com", "ws://example.com:8000/room"),
        ("wss://example.com", "wss://example.com:8000/room"),
        ("HTTPS://example.com", "wss://example.com:8000/room"),
        # A path is kept, the room ID appended to it (a trailing slash or not).
        ("http://example.com/base", "ws://example.com:8000/base/room"),
        ("https://example.com/base/", "wss://example.com:8000/base/room"),
        ("ws://example.com/a/b", "ws://example.com:8000/a/b/room"),
        ("wss://example.com/base", "wss://example.com:8000/base/room"),
        ("localhost/base", "ws://localhost:8000/base/room"),
        # The port given apart wins over one in `host`; IPv6 addresses are bracketed.
        ("ws://example.com:9999", "ws://example.com:8000/room"),
        ("ws://[::1]", "ws://[::1]:8000/room"),
    ],
)
def test_websocket_url_maps_every_host_form(host: str, url: str) -> None:
    assert websocket_url(host, 8000, "room") == url


def test_websocket_url_quotes_the_room_id() -> None:
    assert websocket_url("localhost", 1, "my room/ä") == "ws://localhost:1/my%20room/%C3%A4"
    assert websocket_url("https://h/p", 1, "") == "wss://h:1/p/"


def test_websocket_url_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="unsupported scheme"):
        websocket_url("ftp://example.com", 21, "room")
