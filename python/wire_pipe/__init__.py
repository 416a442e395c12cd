"""wire_pipe: documents synced with the rooms of a server through OS pipes or a socketpair,
across processes."""

from ._client import AsyncPipeClient as AsyncPipeClient
from ._server import AsyncPipeServer as AsyncPipeServer
