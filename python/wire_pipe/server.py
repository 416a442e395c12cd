"""wire-pipe 0.7.1's module path `wire_pipe.server`.

Frames here are length-prefixed (read and written in Rust), so the original's separator and
stop marker frame nothing; they are kept as the values 0.7.1 had, for code that names them.
`Pipe`, the original's channel over that framing, has no counterpart: `AsyncPipeClient` and
`AsyncPipeServer.connect()` do what it did.
"""

from __future__ import annotations

from wiredb import AsyncChannel
from wiredb._channel import NotProvided

from ._server import AsyncPipeServer as AsyncPipeServer

#: wire-pipe 0.7.1's frame separator (not used here: frames carry their length).
SEPARATOR = bytes([226, 164, 131, 121, 240, 77, 100, 52])
#: wire-pipe 0.7.1's end-of-stream marker (not used here: closing the descriptor ends it).
STOP = bytes([80, 131, 218, 244, 198, 47, 146, 214])
#: How much 0.7.1 read at a time (here a frame arrives whole, up to `max_message_bytes`).
MAX_RECEIVE_BYTE_NB = 2**16


class Pipe(NotProvided, AsyncChannel):
    """Use `AsyncPipeClient(connection=await server.connect(id))`: wire-pipe 0.7.1's
    separator-framed channel is not here (its framing breaks on updates that contain the
    separator)."""


__all__ = ["MAX_RECEIVE_BYTE_NB", "SEPARATOR", "STOP", "AsyncPipeServer", "Pipe"]
