"""What a connection costs the server, by how it is decided: no authorization, a signed token
(let in or refused, in Rust), the Python hook (let in or refused).

The server runs in its own process. Client threads open raw WebSocket connections (a fixed
handshake on a plain socket, so that the client side stays cheap) and read until the server
sends its first frame (let in: sync step 1) or closes (refused); then they close. Reported: the
server's CPU time per connection (utime + stime from /proc, so the client's work does not
count), and the connections per second the whole run achieved. One more connection holds the
room open throughout, so that connections let in do not each open and close it.

    python bench/auth.py [--connections 2000] [--threads 4] [--runs 3]

Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from urllib.parse import quote

SECRET = "a benchmark secret of 32 bytes.."

SERVER = textwrap.dedent(
    """
    import sys, anyio
    from wire_websocket import AsyncWebSocketServer, Allow, Deny

    mode = sys.argv[1]

    async def allow(request):
        return Allow()

    async def deny(request):
        return Deny(4403, "no")

    async def main():
        options = {
            "open": {},
            "token": {"token_secret": sys.argv[2]},
            "hook-allow": {"authorize": allow},
            "hook-deny": {"authorize": deny},
        }[mode]
        async with AsyncWebSocketServer(host="127.0.0.1", port=0, **options) as server:
            print(server.port, flush=True)
            await anyio.sleep_forever()

    anyio.run(main)
    """
)

HANDSHAKE = (
    "GET /{path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_connection(port: int, path: str) -> bool:
    """True if let in (a binary frame came first), False if closed first."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(HANDSHAKE.format(path=path).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return False
            data += chunk
        body = data.split(b"\r\n\r\n", 1)[1]
        while not body:
            body = sock.recv(4096)
            if not body:
                return False
        let_in = body[0] & 0x0F == 0x2
        # A close frame (masked, as a client must), then our side of the socket goes.
        sock.sendall(b"\x88\x82\x00\x00\x00\x00\x03\xe8")
        return let_in


def run(mode: str, path: str, connections: int, threads: int) -> tuple[float, float, int]:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, mode, SECRET], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        # Holds the room open (when let in), so that connections let in do not each open and
        # close it: what is measured is the connection and its decision.
        keeper = socket.create_connection(("127.0.0.1", port))
        keeper.sendall(HANDSHAKE.format(path=path).encode())
        keeper.recv(4096)
        one_connection(port, path)  # warm up
        let_in = [0]
        lock = threading.Lock()

        def worker(n: int) -> None:
            mine = sum(one_connection(port, path) for _ in range(n))
            with lock:
                let_in[0] += mine

        cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
        workers = [
            threading.Thread(target=worker, args=(connections // threads,)) for _ in range(threads)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall, cpu = time.perf_counter() - t0, cpu_seconds(server.pid) - cpu0
        done = (connections // threads) * threads
        keeper.close()
        return cpu / done * 1e6, done / wall, let_in[0]
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from wire_websocket import mint_token

    good = mint_token(SECRET, "r", expires_in=3600)
    cases = [
        ("open", "open", "r"),
        ("token, let in", "token", f"r?token={quote(good)}"),
        ("token, refused (bad)", "token", "r?token=x.y.z"),
        ("hook, let in", "hook-allow", "r"),
        ("hook, refused", "hook-deny", "r"),
    ]
    print(f"{args.connections} connections, {args.threads} client threads, median of {args.runs}")
    print(f"{'decided by':24} {'server CPU/conn':>16} {'conn/s':>8} {'let in':>7}")
    for name, mode, path in cases:
        results = [run(mode, path, args.connections, args.threads) for _ in range(args.runs)]
        cpu = statistics.median(r[0] for r in results)
        rate = statistics.median(r[1] for r in results)
        print(f"{name:24} {cpu:13.0f} µs {rate:8.0f} {results[0][2]:>7}")


if __name__ == "__main__":
    main()
