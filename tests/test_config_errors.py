"""Configuration errors are errors: an empty or too short token secret refuses to start, from
the Python API and from `wiredb serve`, instead of serving open."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wire_websocket import AsyncWebSocketServer

SECRETS = ["", "short", "fifteen bytes.."]


@pytest.mark.parametrize("secret", [*SECRETS, b"", b"x" * 15])
def test_the_server_refuses_an_empty_or_short_secret_when_created(secret: str | bytes) -> None:
    with pytest.raises(ValueError, match=r"token_secret .* at least 16 bytes"):
        AsyncWebSocketServer(host="127.0.0.1", port=0, token_secret=secret)


@pytest.mark.parametrize(
    "setting",
    [
        {"max_connections": 0},
        {"max_message_bytes": -1},
        {"max_document_bytes": 0},
        {"max_pending_messages": 1.5},
        {"ping_interval": 0},
        {"idle_timeout": float("nan")},
        {"write_timeout": float("inf")},
        {"auth_timeout": -1},
        {"port": 70_000},
    ],
)
def test_limits_that_are_not_positive_are_refused_when_created(setting: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"host": "127.0.0.1", "port": 0, **setting}
    (name,) = setting
    with pytest.raises((ValueError, TypeError), match=name):
        AsyncWebSocketServer(**arguments)


def test_one_string_of_origins_is_refused() -> None:
    with pytest.raises(TypeError, match="allowed_origins"):
        AsyncWebSocketServer(host="127.0.0.1", port=0, allowed_origins="https://app.example")


@pytest.mark.parametrize("command", ["serve", "token"])
@pytest.mark.parametrize("secret", SECRETS)
def test_the_cli_refuses_an_empty_or_short_secret(
    tmp_path: Path, command: str, secret: str
) -> None:
    env = {**os.environ, "WIREDB_TOKEN_SECRET": secret}
    args = ["serve", "--host", "127.0.0.1", "--port", "0"] if command == "serve" else ["token", "r"]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "wiredb", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired as running:
        pytest.fail(f"`wiredb {command}` started with a {len(secret)}-byte secret: {running}")
    assert result.returncode != 0
    assert "WIREDB_TOKEN_SECRET" in result.stderr and "16 bytes" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("option", "said"),
    [(["--port", "70000"], "port"), (["--write-delay", "-1"], "--write-delay")],
)
def test_serve_says_which_setting_is_wrong_in_one_line(
    tmp_path: Path, option: list[str], said: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wiredb", "serve", "--host", "127.0.0.1", *option],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert result.stderr.startswith("wiredb serve: ") and said in result.stderr
    assert "Traceback" not in result.stderr
