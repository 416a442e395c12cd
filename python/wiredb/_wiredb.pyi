"""The native extension (Rust, PyO3). Internal: use the public classes of `wiredb` and the wires."""

from os import PathLike
from pathlib import Path
from typing import final

__all__ = [
    "Batch",
    "Endpoint",
    "FileStore",
    "RoomCore",
    "StoreState",
    "WebSocketServer",
    "absorb",
    "frame_awareness",
    "frame_step1",
    "frame_step2",
    "frame_update",
    "room_file_name",
    "room_id_from_file_name",
]

@final
class Batch:
    """What one `Endpoint.receive()` took."""

    @property
    def updates(self) -> list[bytes]:
        """Updates to apply, merged into one when possible."""
    @property
    def step1(self) -> list[bytes]:
        """State vectors of sync step 1 requests, each to answer with a step 2."""
    @property
    def synced(self) -> bool:
        """A sync step 2 arrived."""
    @property
    def awareness(self) -> list[bytes]:
        """Awareness updates, in order."""
    @property
    def denied(self) -> str | None:
        """The peer refused permission, with this reason."""
    @property
    def errors(self) -> list[str]:
        """Malformed frames that were skipped."""
    @property
    def closed(self) -> tuple[int, str] | None:
        """The connection ended: close code and reason."""
    def __bool__(self) -> bool: ...

@final
class Endpoint:
    """A local document's link to the sync protocol: a WebSocket connection or a room member."""

    @staticmethod
    def connect(url: str, headers: list[tuple[str, str]], max_message_bytes: int = ...) -> Endpoint:
        """Starts connecting; the outcome arrives through `receive()`."""
    @property
    def fd(self) -> int:
        """Readable when `receive()` has something."""
    def send_step1(self, state_vector: bytes) -> None: ...
    def send_step2(self, update: bytes) -> None: ...
    def send_update(self, update: bytes) -> None:
        """Queues a local update (never waits). Raises ValueError if a room rejects it."""
    def send_awareness(self, payload: bytes) -> None: ...
    def send_frame(self, frame: bytes) -> None:
        """Hands a raw frame to the room; ValueError if it is malformed or rejected."""
    def receive_frames(self) -> tuple[list[bytes], tuple[int, str] | None]:
        """The raw frames queued for this member, and the close reason once closed."""
    def receive(self) -> Batch:
        """Takes everything that arrived, pending updates merged into one."""
    def wait(self, timeout: float | None = None) -> bool:
        """Blocks without the GIL until `receive()` has something; False on timeout."""
    def close(self, code: int = 1000, reason: str = ...) -> None:
        """Sends what is queued, then closes; a room member leaves its room."""

@final
class RoomCore:
    """A native room: its yrs document, awareness and members."""

    def __new__(cls, id: str) -> RoomCore: ...
    @property
    def id(self) -> str: ...
    @property
    def peer_count(self) -> int:
        """Remote peers connected now."""
    def mirror(self) -> Endpoint:
        """An in-process mirror of the document, first sent the whole document."""
    def peer(self) -> Endpoint:
        """An in-process peer, synced like a remote client."""
    def state(self) -> bytes:
        """The whole document as one v1 update."""

@final
class WebSocketServer:
    """The native WebSocket server; rooms are opened and closed by Python through `events()`."""

    def __new__(
        cls,
        max_message_bytes: int = ...,
        max_connections: int = ...,
        ping_interval: float = ...,
        idle_timeout: float = ...,
        max_document_bytes: int = ...,
        max_awareness_state_bytes: int = ...,
        max_awareness_per_second: int = ...,
    ) -> WebSocketServer: ...
    def start(self, host: str, port: int) -> int:
        """Binds and starts serving; returns the bound port. Raises OSError if it cannot bind."""
    @property
    def fd(self) -> int:
        """Readable when `events()` has something."""
    def events(self) -> list[tuple[str, str]]:
        """("open", id), ("close", id) and, last, ("stopped", "")."""
    def opened(self, id: str, room: RoomCore) -> None: ...
    def open_failed(self, id: str, reason: str) -> None: ...
    def closed(self, id: str) -> None: ...
    def open_rooms(self) -> list[str]: ...
    def stop(self) -> None:
        """Stops accepting and closes every connection with 1001; a "stopped" event follows."""

def frame_step1(state_vector: bytes) -> bytes: ...
def frame_step2(update: bytes) -> bytes: ...
def frame_update(update: bytes) -> bytes: ...
def frame_awareness(payload: bytes) -> bytes: ...
def absorb(frames: list[bytes], closed: tuple[int, str] | None = None) -> Batch:
    """Decodes received frames into one batch, pending updates merged into one."""

@final
class StoreState:
    """A snapshot of a `FileStore`'s progress."""

    @property
    def phase(self) -> str:
        """One of "loading", "open", "failed" or "closed"."""
    @property
    def records(self) -> int:
        """Complete records found in the file when it was opened."""
    @property
    def torn_bytes(self) -> int:
        """Bytes of a torn or garbage tail (and of holes) cut off the file when it was opened."""
    @property
    def checked(self) -> int:
        """Records found with a valid checksum (the others are legacy records)."""
    @property
    def holes(self) -> int:
        """Holes found between good records (skipped, the file rewritten without them)."""
    @property
    def written(self) -> int:
        """Every flush ticket up to this one is written (its `write(2)` returned)."""
    @property
    def durable(self) -> int:
        """Every flush ticket up to this one is durable under the fsync policy."""
    @property
    def failed(self) -> int:
        """The last ticket whose write, fsync or rewrite failed (the store retries)."""
    @property
    def writes(self) -> int:
        """Writes done so far."""
    @property
    def syncs(self) -> int:
        """fsyncs of appended records done so far."""
    @property
    def rewrites(self) -> int:
        """Rewrites of the whole file done after a failed fsync."""
    @property
    def error(self) -> str | None:
        """Why opening failed or the last write failed, if it did."""
    def check(self) -> None:
        """Raises that error: RuntimeError for a file of another version, OSError for I/O."""

@final
class FileStore:
    """A room core persisted to an update file natively; I/O on tokio's blocking pool."""

    version: str
    def __new__(
        cls,
        room: RoomCore,
        path: str | PathLike[str],
        write_delay: float = 0.0,
        squash: bool = False,
        create_dirs: bool = False,
        fsync: str = "flush",
    ) -> FileStore:
        """Starts loading `path` into `room`, then appends every update the room applies."""
    @property
    def fsync(self) -> str:
        """The fsync policy: "none", "flush" or "always"."""
    @property
    def fd(self) -> int:
        """Readable when the state changed since the last `poll()`."""
    @property
    def path(self) -> Path: ...
    def poll(self) -> StoreState:
        """The current state; makes `fd` unreadable until the next change."""
    def flush(self, durable: bool = False) -> int:
        """Asks for everything applied so far to be written now (and, with `durable`, made
        durable under the policy); returns a ticket."""
    def close(self) -> None:
        """Stops taking updates; what is pending is written (fsynced unless the policy is
        "none"), then "closed"."""
    def wait(self, timeout: float | None = None) -> bool:
        """Blocks without the GIL until the state changes; False on timeout."""

def room_file_name(id: str) -> str:
    """The escaped file name of a room's store; ValueError if too long."""

def room_id_from_file_name(name: str) -> str | None: ...
