"""wire-pipe 0.7.1's module path `wire_pipe.client`."""

from ._client import AsyncPipeClient as AsyncPipeClient

__all__ = ["AsyncPipeClient"]
