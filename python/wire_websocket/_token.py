"""Access tokens for a server's native token check: signed (HS256 JWT) with the server's secret."""

from __future__ import annotations

import time

from wiredb._wiredb import MIN_SECRET_BYTES
from wiredb._wiredb import mint_token as _mint_token


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else bytes(secret)


def check_secret(secret: str | bytes) -> bytes:
    """The secret as bytes, if it is one a server may use.

    Raises:
        TypeError: it is neither str nor bytes.
        ValueError: it is empty or shorter than `MIN_SECRET_BYTES` (an empty one is not a way
            to serve without tokens: pass None for that).
    """
    if not isinstance(secret, str | bytes | bytearray):
        raise TypeError(f"token_secret must be str or bytes, not {type(secret).__name__}")
    raw = _secret_bytes(secret)
    if len(raw) < MIN_SECRET_BYTES:
        what = "empty" if not raw else f"{len(raw)} bytes long"
        raise ValueError(
            f"token_secret is {what}: it must be at least {MIN_SECRET_BYTES} bytes "
            "(None serves without tokens)"
        )
    return raw


def mint_token(
    secret: str | bytes,
    room: str,
    *,
    read_only: bool = False,
    expires_in: float = 3600,
    subject: str | None = None,
) -> str:
    """A token that opens `room` (read-only or not) for `expires_in` seconds.

    It is a JWT signed with HMAC-SHA256: claims `room`, `exp` (Unix seconds), `ro`, and `sub`
    if given. Any JWT library can mint the same with the same secret (say, in the web app
    that serves your pages). The server (`AsyncWebSocketServer(token_secret=...)`) verifies it
    natively, in constant time.
    ```py
    secret = secrets.token_bytes(32)  # shared with the server, kept secret
    token = mint_token(secret, "notes", read_only=True, expires_in=600, subject="alice")
    AsyncWebSocketClient("notes", host="localhost", port=8000, token=token)
    ```

    Raises:
        ValueError: the secret is shorter than 16 bytes.
    """
    if expires_in <= 0:
        raise ValueError("expires_in must be positive")
    expires_at = int(time.time() + expires_in)
    return _mint_token(_secret_bytes(secret), room, read_only, expires_at, subject)
