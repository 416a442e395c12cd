"""Per-update cost of persisting a room: the native store, the documented `Room.doc` pattern,
and the original wiredb/wire-file 0.7.1 running the same pattern.

Each server runs in its own process and persists room "bench" to `<dir>/bench_updates.y`. One
raw WebSocket client sends N updates (one map key each, one message each: the same bytes to
every server) as fast as the server reads them, while another thread drains what the server
sends back. The clock runs from the first update sent until the file holds all N. Reported per
update: the wall time, and the CPU time the server process used (utime + stime from /proc).
"memory" is the baseline: a room that persists nothing (clock stopped when the room answers a
sync step 1 sent after the updates).

    python bench/file_persist.py [--updates 3000] [--runs 3] [--fsync none|flush|always]

The original needs pycrdt<0.13, so it is installed into `.venv-original-bench` (wiredb,
wire-file and wire-websocket 0.7.1) on first use. Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
ORIGINAL = ["wiredb==0.7.1", "wire-file==0.7.1", "wire-websocket==0.7.1"]
HEADER = b"0.0.1\x00"
WRITE_DELAY = 0.0
FSYNC = "flush"

SEED_OURS = textwrap.dedent(
    """
    import sys, anyio
    from anyio import TASK_STATUS_IGNORED, sleep_forever
    from wire_file import AsyncFileClient
    from wire_websocket import AsyncWebSocketServer
    from wiredb import Room

    port, directory = int(sys.argv[1]), sys.argv[2]

    class SeedRoom(Room):
        async def run(self, *, task_status=TASK_STATUS_IGNORED):
            await self.task_group.start(self.persist)
            await super().run(task_status=task_status)

        async def persist(self, *, task_status):
            async with AsyncFileClient(doc=self.doc, path=f"{directory}/{self.id}_updates.y"):
                task_status.started()
                await sleep_forever()

    async def main():
        async with AsyncWebSocketServer(SeedRoom, host="127.0.0.1", port=port):
            await sleep_forever()

    anyio.run(main)
    """
)

# The same pattern, for the original (its Room, server and file client).
SEED_ORIGINAL = SEED_OURS


def varuint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def update_messages(n: int) -> list[bytes]:
    """N sync-update messages, each setting one key of map "items"."""
    doc: Doc[Any] = Doc(client_id=0x0BE7C4)
    items = doc.get("items", type=Map)
    messages = []
    for i in range(n):
        before = doc.get_state()
        items[f"k{i}"] = i
        update = doc.get_update(before)
        messages.append(b"\x00\x02" + varuint(len(update)) + update)
    return messages


def keys_on_disk(path: Path) -> int:
    """Keys of map "items" in the file's complete records (a write may be under way)."""
    return len(read_file(path)[0].get("items", type=Map))


def read_file(path: Path) -> tuple[Doc[Any], int]:
    """The document in the file's complete records, and how many there are."""
    doc: Doc[Any] = Doc()
    records = 0
    if not path.exists():
        return doc, 0
    data = path.read_bytes()
    if not data.startswith(HEADER):
        return doc, 0
    pos = len(HEADER)
    while pos < len(data):
        length, shift, start = 0, 0, pos
        while pos < len(data):
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        else:
            break
        if start == pos or pos + length > len(data):
            break
        doc.apply_update(data[pos : pos + length])
        records += 1
        pos += length
    return doc, records


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError("the server did not listen")


def original_python() -> str:
    venv = ROOT / ".venv-original-bench"
    python = venv / "bin" / "python"
    marker = venv / "installed.txt"
    if not (marker.exists() and marker.read_text().split() == ORIGINAL):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *ORIGINAL], check=True)
        marker.write_text(" ".join(ORIGINAL))
    return str(python)


def server_command(kind: str, port: int, directory: Path) -> list[str]:
    if kind == "memory":
        return [sys.executable, "-m", "wiredb", "serve", "--port", str(port), "--no-persist"]
    if kind == "native":
        serve = [sys.executable, "-m", "wiredb", "serve", "--port", str(port)]
        serve += ["--directory", str(directory), "--write-delay", str(WRITE_DELAY)]
        return [*serve, "--fsync", FSYNC]
    if kind == "seed":
        return [sys.executable, "-c", SEED_OURS, str(port), str(directory)]
    return [original_python(), "-c", SEED_ORIGINAL, str(port), str(directory)]


def run_once(kind: str, messages: list[bytes], warmup: list[bytes]) -> tuple[float, float, int]:
    """Returns (wall seconds, server CPU seconds, records in the file) for `messages`."""
    directory = Path(tempfile.mkdtemp(prefix=f"wiredb-bench-{kind}-"))
    path = directory / "bench_updates.y"
    port = free_port()
    env = {**os.environ, "WIREDB_LOG": "error"}
    process = subprocess.Popen(
        server_command(kind, port, directory),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, process)
        with connect(f"ws://127.0.0.1:{port}/bench", max_size=None, max_queue=None) as ws:
            stop, asked, answered = threading.Event(), threading.Event(), threading.Event()

            def drain() -> None:
                while not stop.is_set():
                    try:
                        message = ws.recv(timeout=0.1)
                    except TimeoutError:
                        continue
                    except Exception:
                        return
                    if asked.is_set() and isinstance(message, bytes) and message[:2] == b"\0\1":
                        answered.set()

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            ws.send(b"\x00\x00\x01\x00")  # sync step 1: an empty state vector
            for message in warmup:
                ws.send(message)
            if kind == "memory":
                time.sleep(0.5)  # let the first answer pass before asking again
            while kind != "memory" and keys_on_disk(path) < len(warmup):
                time.sleep(0.01)
            cpu0, t0 = cpu_seconds(process.pid), time.perf_counter()
            for message in messages:
                ws.send(message)
            total = len(warmup) + len(messages)
            if kind == "memory":
                # Nothing on disk to wait for: the room answers a step 1 after the updates.
                asked.set()
                ws.send(b"\x00\x00\x01\x00")
                answered.wait(60)
            else:
                while keys_on_disk(path) < total:
                    time.sleep(0.005)
            wall, cpu = time.perf_counter() - t0, cpu_seconds(process.pid) - cpu0
            stop.set()
        return wall, cpu, read_file(path)[1]
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write-delay", type=float, default=0.0, help="for the native store")
    parser.add_argument("--fsync", default="flush", choices=["none", "flush", "always"])
    parser.add_argument("--only", choices=["memory", "native", "seed", "original"], action="append")
    args = parser.parse_args()
    global WRITE_DELAY, FSYNC
    WRITE_DELAY, FSYNC = args.write_delay, args.fsync
    all_messages = update_messages(args.updates + 10)
    warmup, messages = all_messages[:10], all_messages[10:]
    kinds = args.only or ["memory", "native", "seed", "original"]
    print(f"{args.updates} updates, one message each; median of {args.runs} runs")
    print(f"{'server':<10} {'wall µs/update':>15} {'server CPU µs/update':>21} {'records':>8}")
    for kind in kinds:
        results = [run_once(kind, messages, warmup) for _ in range(args.runs)]
        wall = statistics.median(r[0] for r in results) / args.updates * 1e6
        cpu = statistics.median(r[1] for r in results) / args.updates * 1e6
        records = results[-1][2]
        print(f"{kind:<10} {wall:>15.1f} {cpu:>21.1f} {records:>8}")


if __name__ == "__main__":
    main()
