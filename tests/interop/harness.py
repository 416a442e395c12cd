"""Runs the foreign peers of the interop tests: each is a process driven through JSON lines
(commands on its stdin, a snapshot of what it sees on its stdout after every change).

The peers are installed by `tests/interop/setup.sh` (which `scripts/test.sh` runs): the npm
packages into `tests/interop/node_modules` (`npm ci` against the committed lock file), the
Python peers whose pins conflict with ours into their own virtual environments under
`tests/interop/.peers/`. A peer that is not installed skips its tests, except under CI=true
where it fails them: a registry that could not be reached must not pass for a green run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from subprocess import PIPE
from typing import Any

import pytest
from anyio import CancelScope, fail_after, move_on_after, open_process, sleep
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

INTEROP = Path(__file__).parent
SCRIPTS = INTEROP / "scripts"
NODE_MODULES = INTEROP / "node_modules"
PEERS = INTEROP / ".peers"

#: How long a peer may take to reach an expected state.
PEER_TIMEOUT = 20.0

State = dict[str, Any]


def require(path: Path, what: str) -> None:
    """Skips the test (fails it under CI=true) when a peer is not installed."""
    if path.exists():
        return
    message = f"{what} is not installed ({path} is missing): run tests/interop/setup.sh"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def node() -> str:
    path = shutil.which("node")
    require(Path(path or "/nonexistent/node"), "Node.js")
    # setup.sh writes the stamp once `npm ci` succeeded.
    require(
        NODE_MODULES / ".installed", "the npm packages (yjs, y-websocket, ws, @y/websocket-server)"
    )
    return str(path)


def peer_python(name: str) -> str:
    """The Python of the peer's own virtual environment."""
    # setup.sh writes the stamp once everything is installed in it.
    require(PEERS / name / ".installed", f"the {name} virtual environment")
    return str(PEERS / name / "bin" / "python")


def free_port() -> int:
    """A port nobody listens on now (for a server that must come back on the same port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PeerError(AssertionError):
    pass


class Peer:
    """A running peer: `send()` a command, `wait_for()` a state."""

    def __init__(self, name: str, process: Process) -> None:
        self.name = name
        self.process = process
        self.state: State = {}
        assert process.stdout is not None
        self._stdout = BufferedByteReceiveStream(process.stdout)

    async def send(self, op: str, **args: Any) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send((json.dumps({"op": op, **args}) + "\n").encode())

    async def next_state(self) -> State:
        try:
            line = await self._stdout.receive_until(b"\n", 1 << 24)
        except Exception as error:
            code = await self.process.wait()
            raise PeerError(f"{self.name} exited with {code} ({error!r})") from error
        self.state = json.loads(line)
        return self.state

    async def wait_for(
        self, predicate: Callable[[State], bool], timeout: float = PEER_TIMEOUT
    ) -> State:
        """Reads the peer's snapshots until one satisfies `predicate`."""
        with move_on_after(timeout) as scope:
            while not (self.state and predicate(self.state)):
                await self.next_state()
        if scope.cancelled_caught:
            raise PeerError(f"{self.name} did not get there in {timeout} s: last {self.state}")
        return self.state

    async def poll_for(
        self, predicate: Callable[[State], bool], op: str, timeout: float = PEER_TIMEOUT
    ) -> State:
        """For a peer that only sees changes when asked (a blocking client's `pull()`): sends
        `op` until a snapshot satisfies `predicate`."""
        with move_on_after(timeout) as scope:
            while not (self.state and predicate(self.state)):
                await self.send(op)
                await self.next_state()
                if not predicate(self.state):
                    await sleep(0.05)
        if scope.cancelled_caught:
            raise PeerError(f"{self.name} did not get there in {timeout} s: last {self.state}")
        return self.state

    def kill(self) -> None:
        """Kills the process outright (SIGKILL): no goodbye on any socket."""
        self.process.kill()


@asynccontextmanager
async def run_peer(name: str, command: list[str]) -> AsyncIterator[Peer]:
    """Starts a peer; on exit closes its stdin (its cue to leave), then kills it if needed."""
    process = await open_process(command, stdin=PIPE, stdout=PIPE, stderr=None, cwd=INTEROP)
    try:
        yield Peer(name, process)
    finally:
        with CancelScope(shield=True):
            with move_on_after(5):
                if process.stdin is not None:
                    await process.stdin.aclose()
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.aclose()


@asynccontextmanager
async def peer_server(name: str, command: list[str]) -> AsyncIterator[int]:
    """Starts a server peer and yields its port (the first line it prints)."""
    async with run_peer(name, command) as peer:
        with fail_after(PEER_TIMEOUT):
            state = await peer.next_state()
        yield int(state["port"])


def yjs_client(
    url: str, room: str, params: dict[str, str] | None = None
) -> AbstractAsyncContextManager[Peer]:
    """A JavaScript Yjs client: y-websocket's `WebsocketProvider` on Node (`params`: its URL's
    query parameters)."""
    args = [node(), str(SCRIPTS / "yjs_client.mjs"), url, room]
    if params is not None:
        args.append(json.dumps(params))
    return run_peer("yjs client", args)


def yjs_server() -> AbstractAsyncContextManager[int]:
    """The reference Node server of y-websocket (@y/websocket-server 0.1.1)."""
    return peer_server("yjs server", [node(), str(SCRIPTS / "yjs_server.mjs")])


def pycrdt_client(url: str, room: str) -> AbstractAsyncContextManager[Peer]:
    """pycrdt's `Provider`, with the pycrdt of this test environment."""
    script = str(SCRIPTS / "pycrdt_client.py")
    return run_peer("pycrdt Provider", [sys.executable, script, url, room])


def pycrdt_websocket_server() -> AbstractAsyncContextManager[int]:
    """pycrdt-websocket's `WebsocketServer`, from its own virtual environment."""
    python = peer_python("pycrdt-websocket")
    script = str(SCRIPTS / "pycrdt_websocket_server.py")
    return peer_server("pycrdt-websocket server", [python, script])


def wiredb071_client(mode: str, port: int, room: str) -> AbstractAsyncContextManager[Peer]:
    """A client of the original wiredb 0.7.1: `mode` is "async" or "sync" (blocking)."""
    python = peer_python("wiredb-0.7.1")
    script = str(SCRIPTS / "wiredb071_client.py")
    return run_peer(f"wiredb 0.7.1 {mode} client", [python, script, mode, str(port), room])


def wiredb071_server() -> AbstractAsyncContextManager[int]:
    """The original wiredb 0.7.1 WebSocket server, from its own virtual environment."""
    python = peer_python("wiredb-0.7.1")
    script = str(SCRIPTS / "wiredb071_server.py")
    return peer_server("wiredb 0.7.1 server", [python, script])
