"""wire-memory 0.7.1's module path `wire_memory.client`."""

from ._client import AsyncMemoryClient as AsyncMemoryClient

__all__ = ["AsyncMemoryClient"]
