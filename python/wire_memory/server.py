"""wire-memory 0.7.1's module path `wire_memory.server`. `Memory` wraps a native room member
here, not a pair of anyio streams (see "Migrating from wiredb 0.7.1" in the README)."""

from ._server import AsyncMemoryServer as AsyncMemoryServer
from ._server import Memory as Memory

__all__ = ["AsyncMemoryServer", "Memory"]
