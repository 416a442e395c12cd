"""The WebSocket wire of wiredb: a native server and clients speaking the y-websocket protocol."""

from ._client import AsyncWebSocketClient as AsyncWebSocketClient
from ._client import WebSocketClient as WebSocketClient
from ._server import AsyncWebSocketServer as AsyncWebSocketServer
from ._token import mint_token as mint_token
