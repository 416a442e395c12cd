"""wiredb 0.7.1's module path `wiredb.server`: the same names, from their modules here."""

from ._room import Room as Room
from ._room import RoomManager as RoomManager
from ._server import AsyncServer as AsyncServer

__all__ = ["AsyncServer", "Room", "RoomManager"]
