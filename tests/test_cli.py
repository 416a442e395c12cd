"""`wiredb serve`: the main job."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from pycrdt import Text

from wire_websocket import WebSocketClient, mint_token
from wiredb._wiredb import verify_token


def test_the_console_script_is_wiredb_cli_main() -> None:
    (script,) = entry_points(group="console_scripts", name="wiredb")
    assert script.value == "wiredb._cli:main"
    assert script.dist is not None and script.dist.name == "wiredb"


def wiredb_command() -> list[str]:
    """The `wiredb` script installed next to this Python (not another install's on PATH), or
    what it runs when it is not installed (a development install may not have it)."""
    script = shutil.which("wiredb", path=os.path.dirname(sys.executable))
    if script is not None:
        return [script]
    run_entry_point = (
        "import sys; from importlib.metadata import entry_points; "
        "sys.exit(entry_points(group='console_scripts', name='wiredb')['wiredb'].load()())"
    )
    return [sys.executable, "-c", run_entry_point]


@pytest.mark.parametrize("how", ["module", "script"])
def test_serve_runs_until_interrupted_and_stops_cleanly(tmp_path: Path, how: str) -> None:
    command = [sys.executable, "-m", "wiredb"] if how == "module" else wiredb_command()
    with subprocess.Popen(
        [*command, "serve", "--host", "127.0.0.1", "--port", "0"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        assert server.stderr is not None
        try:
            line = server.stderr.readline()
            match = re.search(r"listening on ws://127\.0\.0\.1:(\d+)", line)
            assert match, line
            port = int(match.group(1))
            with WebSocketClient("cli", host="localhost", port=port, auto_push=True) as a:
                a.pull()
                a.doc.get("text", type=Text).insert(0, "served")
                with WebSocketClient("cli", host="localhost", port=port) as b:
                    b.pull()
                    text = b.doc.get("text", type=Text)
                    while str(text) != "served":
                        assert b.wait(10)
            server.send_signal(signal.SIGINT)
            assert server.wait(timeout=20) == 0
            assert "stopped" in server.stderr.read()
        finally:
            if server.poll() is None:
                server.kill()


def test_token_mints_with_the_secret_of_the_environment() -> None:
    secret = "a secret of at least 16 bytes"
    env = {**os.environ, "WIREDB_TOKEN_SECRET": secret}
    command = [sys.executable, "-m", "wiredb", "token", "notes", "--read-only", "--subject", "al"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    read_only, expires_at, subject = verify_token(secret.encode(), result.stdout.strip(), "notes")
    assert (read_only, subject) == (True, "al")
    assert 0 < expires_at - time.time() <= 3600
    env.pop("WIREDB_TOKEN_SECRET")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "WIREDB_TOKEN_SECRET" in result.stderr


def test_serve_requires_tokens_when_the_secret_is_set(tmp_path: Path) -> None:
    secret = "a secret of at least 16 bytes"
    env = {**os.environ, "WIREDB_TOKEN_SECRET": secret}
    with subprocess.Popen(
        [sys.executable, "-m", "wiredb", "serve", "--port", "0", "--no-persist"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        assert server.stderr is not None
        try:
            match = re.search(r"listening on ws://127\.0\.0\.1:(\d+)", server.stderr.readline())
            assert match
            port = int(match.group(1))
            with pytest.raises(ConnectionError):
                with WebSocketClient("r", host="localhost", port=port) as refused:
                    refused.pull()
            token = mint_token(secret, "r")
            with WebSocketClient("r", host="localhost", port=port, token=token) as client:
                client.pull()
                assert client.synchronized
            server.send_signal(signal.SIGINT)
            assert server.wait(timeout=20) == 0
        finally:
            if server.poll() is None:
                server.kill()
