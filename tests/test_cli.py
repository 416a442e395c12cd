"""`wiredb serve`: the main job."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from pycrdt import Text

from wire_websocket import WebSocketClient


def test_serve_runs_until_interrupted_and_stops_cleanly(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "wiredb", "serve", "--host", "127.0.0.1", "--port", "0"],
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
