"""The WebSocket wire of wiredb: a native server and clients speaking the y-websocket protocol."""

from ._auth import Allow as Allow
from ._auth import Authorize as Authorize
from ._auth import Connection as Connection
from ._auth import Decision as Decision
from ._auth import Deny as Deny
from ._auth import ReadOnly as ReadOnly
from ._auth import Request as Request
from ._client import FINAL_CLOSE_CODES as FINAL_CLOSE_CODES
from ._client import AsyncWebSocketClient as AsyncWebSocketClient
from ._client import WebSocketClient as WebSocketClient
from ._server import AsyncWebSocketServer as AsyncWebSocketServer
from ._token import mint_token as mint_token
