"""`wiredb serve`: a WebSocket server until interrupted, persisting every room to a directory."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
from pathlib import Path
from typing import Literal

import anyio

log = logging.getLogger("wiredb")

#: The environment variable holding the token secret (never a command-line argument: those
#: are visible to every user of the machine).
SECRET_ENV = "WIREDB_TOKEN_SECRET"


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
    serve.add_argument(
        "--allowed-origin",
        action="append",
        dest="allowed_origins",
        metavar="ORIGIN",
        help="a browser origin allowed to connect (repeat for more; default: any)",
    )
    serve.add_argument(
        "--memory-limit",
        type=int,
        default=None,
        metavar="BYTES",
        help="what clients may make the server hold, in bytes (default: 1 GiB); a connection "
        "that would pass it is closed with 1013",
    )
    serve.epilog = (
        f"With {SECRET_ENV} set, every client needs a token signed with it (see `wiredb token`)."
    )
    token = commands.add_parser(
        "token", help=f"print a token for a room, signed with ${SECRET_ENV}"
    )
    token.add_argument("room", help="the room ID the token opens")
    token.add_argument("--read-only", action="store_true", help="a read-only token")
    token.add_argument(
        "--expires-in", type=float, default=3600, help="seconds it is valid (default: 3600)"
    )
    token.add_argument("--subject", help="who it is for (shown when listing connections)")
    return parser.parse_args(argv)


async def serve(
    host: str,
    port: int,
    directory: str | None = "wiredb-data",
    write_delay: float = 0.0,
    fsync: Literal["none", "flush", "always"] = "flush",
    token_secret: str | None = None,
    allowed_origins: list[str] | None = None,
    memory_limit: int | None = None,
) -> None:
    """Serves until SIGINT or SIGTERM; rooms persisted under `directory` unless it is None.

    Raises:
        ValueError, TypeError, OverflowError: a setting is wrong (before listening).
        OSError: the server cannot listen.
    """
    from wire_file import file_room_factory
    from wire_websocket import AsyncWebSocketServer
    from wiredb import Room

    if not 0 <= write_delay < math.inf:
        # Else every room would be refused as it opens, the server listening on.
        raise ValueError(f"--write-delay must be a number of seconds >= 0, not {write_delay}")

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
        async with AsyncWebSocketServer(
            factory,
            host=host,
            port=port,
            token_secret=token_secret,
            allowed_origins=allowed_origins,
            memory_limit=memory_limit,
        ) as server:
            log.info("wiredb listening on ws://%s:%d, rooms %s", host, server.port, where)
            if token_secret is not None:
                log.info("clients need a token signed with $%s", SECRET_ENV)
            async for signum in signals:
                log.info("received %s: stopping", signal.Signals(signum).name)
                break
    log.info("wiredb stopped")


def secret_from_environment(command: str) -> str | None:
    """The token secret of the environment: None if the variable is not set at all. Set but
    empty or too short is a mistake, not a wish to run open: the command exits saying so."""
    from wiredb._wiredb import MIN_SECRET_BYTES

    secret = os.environ.get(SECRET_ENV)
    if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
        what = "empty" if not secret else f"{len(secret.encode())} bytes long"
        sys.exit(
            f"wiredb {command}: {SECRET_ENV} is {what}; a token secret must be at least "
            f"{MIN_SECRET_BYTES} bytes (unset the variable to serve without tokens)"
        )
    return secret


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    secret = secret_from_environment(args.command)
    if args.command == "serve":
        directory = None if args.no_persist else args.directory
        try:
            anyio.run(
                serve,
                args.host,
                args.port,
                directory,
                args.write_delay,
                args.fsync,
                secret,
                args.allowed_origins,
                args.memory_limit,
            )
        except (ValueError, TypeError, OverflowError, OSError) as error:
            # Raised before listening (an error while serving comes as a group, with its
            # traceback): a setting to fix, said in one line.
            sys.exit(f"wiredb serve: {error}")
    elif args.command == "token":
        from wire_websocket import mint_token

        if secret is None:
            sys.exit(f"wiredb token: set {SECRET_ENV} to the server's secret")
        print(
            mint_token(
                secret,
                args.room,
                read_only=args.read_only,
                expires_in=args.expires_in,
                subject=args.subject,
            )
        )
