"""wire_memory: documents synced with the rooms of a server in the same process, no sockets."""

from ._client import AsyncMemoryClient as AsyncMemoryClient
from ._server import AsyncMemoryServer as AsyncMemoryServer
from ._server import Memory as Memory
