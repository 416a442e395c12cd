"""The file wire of wiredb: documents and rooms persisted to append-only update files.

The file format is wire-file 0.7.1's (header `0.0.1\\0`, then one lib0 var-length buffer per
update, the update followed inside its buffer by a checksum that the original ignores), and the
file I/O runs in Rust, off the event loop.
"""

from ._client import AsyncFileClient as AsyncFileClient
from ._client import FileClient as FileClient
from ._room import FileRoom as FileRoom
from ._room import file_room_factory as file_room_factory
from ._room import room_file_name as room_file_name
from ._room import room_id_from_file_name as room_id_from_file_name
from ._store import Fsync as Fsync

__all__ = [
    "AsyncFileClient",
    "FileClient",
    "FileRoom",
    "Fsync",
    "file_room_factory",
    "room_file_name",
    "room_id_from_file_name",
]
