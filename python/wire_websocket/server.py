"""wire-websocket 0.7.1's module path `wire_websocket.server`."""

from ._server import AsyncWebSocketServer as AsyncWebSocketServer

__all__ = ["AsyncWebSocketServer"]
