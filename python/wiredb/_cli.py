"""`wiredb serve`: a WebSocket server until interrupted."""

from __future__ import annotations

import argparse
import logging
import signal

import anyio

log = logging.getLogger("wiredb")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wiredb", description="wiredb: Yjs documents in sync.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run a WebSocket server until interrupted")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    serve.add_argument("--port", type=int, default=1234, help="port to listen on (0: any)")
    return parser.parse_args(argv)


async def serve(host: str, port: int) -> None:
    from wire_websocket import AsyncWebSocketServer

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with AsyncWebSocketServer(host=host, port=port) as server:
            log.info("wiredb listening on ws://%s:%d", host, server.port)
            async for signum in signals:
                log.info("received %s: stopping", signal.Signals(signum).name)
                break
    log.info("wiredb stopped")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "serve":
        anyio.run(serve, args.host, args.port)
