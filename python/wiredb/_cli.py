"""`wiredb serve`: a WebSocket server until interrupted, persisting every room to a directory."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path
from typing import Literal

import anyio

log = logging.getLogger("wiredb")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wiredb", description="wiredb: Yjs documents in sync.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run a WebSocket server until interrupted")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    serve.add_argument("--port", type=int, default=1234, help="port to listen on (0: any)")
    serve.add_argument(
        "--directory",
        default="wiredb-data",
        help="where each room's updates are stored, as <escaped room id>_updates.y "
        "(default: ./wiredb-data, created if missing)",
    )
    serve.add_argument(
        "--write-delay",
        type=float,
        default=0.0,
        help="seconds an update may wait to share a write with later ones (default: 0)",
    )
    serve.add_argument(
        "--fsync",
        choices=["none", "flush", "always"],
        default="flush",
        help="when room files are fsynced: 'flush' (default) when a room closes (and on a "
        "flush), 'always' after every write (an update is durable as soon as it is written), "
        "'none' never (the kernel writes back on its own)",
    )
    serve.add_argument(
        "--no-persist", action="store_true", help="keep rooms in memory only (lost on exit)"
    )
    return parser.parse_args(argv)


async def serve(
    host: str,
    port: int,
    directory: str | None = "wiredb-data",
    write_delay: float = 0.0,
    fsync: Literal["none", "flush", "always"] = "flush",
) -> None:
    """Serves until SIGINT or SIGTERM; rooms persisted under `directory` unless it is None."""
    from wire_file import file_room_factory
    from wire_websocket import AsyncWebSocketServer
    from wiredb import Room

    factory = (
        Room
        if directory is None
        else file_room_factory(directory, write_delay=write_delay, fsync=fsync)
    )
    where = (
        "in memory only"
        if directory is None
        else f"persisted in {Path(directory).resolve()} (fsync: {fsync})"
    )
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with AsyncWebSocketServer(factory, host=host, port=port) as server:
            log.info("wiredb listening on ws://%s:%d, rooms %s", host, server.port, where)
            async for signum in signals:
                log.info("received %s: stopping", signal.Signals(signum).name)
                break
    log.info("wiredb stopped")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "serve":
        directory = None if args.no_persist else args.directory
        anyio.run(serve, args.host, args.port, directory, args.write_delay, args.fsync)
