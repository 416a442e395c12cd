"""wiredb: Yjs documents kept in sync from Python, with rooms, wires and the sync protocol in
Rust. Documents are `pycrdt.Doc`s."""

from ._channel import AsyncChannel as AsyncChannel
from ._channel import Channel as Channel
from ._client import AsyncClient as AsyncClient
from ._client import AsyncClientMixin as AsyncClientMixin
from ._client import Client as Client
from ._client import ClientMixin as ClientMixin
from ._client import ConnectionStatus as ConnectionStatus
from ._client import Pull as Pull
from ._client import Reconnect as Reconnect
from ._delivery import wait_delivered as wait_delivered
from ._doc import Doc as Doc
from ._room import Room as Room
from ._room import RoomManager as RoomManager
from ._server import AsyncServer as AsyncServer
