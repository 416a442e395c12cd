"""The native extension (Rust, PyO3). Internal: use the public classes of `wiredb` and the wires."""

from os import PathLike
from pathlib import Path
from typing import final

__all__ = [
    "MIN_SECRET_BYTES",
    "Batch",
    "Endpoint",
    "FileStore",
    "PendingJoin",
    "PipeServer",
    "RoomCore",
    "RoomRegistry",
    "StoreState",
    "WebSocketServer",
    "absorb",
    "frame_awareness",
    "frame_step1",
    "frame_step2",
    "frame_token",
    "frame_update",
    "memory_usage",
    "mint_token",
    "room_file_name",
    "room_id_from_file_name",
    "set_memory_limit",
    "update_fits",
    "verify_token",
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
    def step2(self) -> int:
        """How many sync step 2s arrived (each answers one sync step 1, in order)."""
    @property
    def awareness(self) -> list[bytes]:
        """Awareness updates, in order."""
    @property
    def query_awareness(self) -> bool:
        """The peer asked for our awareness states."""
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
    """A local document's link to the sync protocol: a connection (WebSocket, pipe) or a room
    member. Dropping it ends its connection or leaves its room."""

    @staticmethod
    def connect(
        url: str,
        headers: list[tuple[str, str]],
        max_message_bytes: int = ...,
        ping_interval: float | None = ...,
        idle_timeout: float | None = ...,
    ) -> Endpoint:
        """Starts connecting; the outcome arrives through `receive()`. The server is pinged
        after `ping_interval` seconds without a word from it (default 20), and the connection
        is lost (1006) after `idle_timeout` seconds of silence (default 60; also the time
        allowed to connect). None: never. ValueError if not positive."""
    @staticmethod
    def pipe(sender: int, receiver: int, max_message_bytes: int = ...) -> Endpoint:
        """A pipe-wire connection over descriptors it takes ownership of (closed when the
        connection ends, even on error): one socket if `sender == receiver`, else the sending
        and receiving ends. Raises OSError if they cannot be used."""
    @property
    def fd(self) -> int:
        """Readable when `receive()` has something."""
    @property
    def unsent(self) -> bool:
        """Whether something sent was not yet written to the connection (a member: never)."""
    def wake_when_sent(self) -> None:
        """Makes `fd` readable once nothing is `unsent` (at once if so already)."""
    def send_step1(self, state_vector: bytes) -> None: ...
    def send_step2(self, update: bytes) -> None: ...
    def send_update(self, update: bytes) -> None:
        """Queues a local update (never waits). Raises ValueError if a room rejects it."""
    def send_awareness(self, payload: bytes) -> None: ...
    def send_query_awareness(self) -> None:
        """Asks the peer for every awareness state it knows."""
    def send_frame(self, frame: bytes) -> None:
        """Hands a raw frame to the room; ValueError if it is malformed or rejected."""
    def receive_frames(self) -> tuple[list[bytes], tuple[int, str] | None]:
        """The raw frames queued for this member, and the close reason once closed."""
    def receive(self) -> Batch:
        """Takes everything that arrived, pending updates merged into one."""
    def wait(self, timeout: float | None = None) -> bool:
        """Blocks without the GIL until `receive()` has something; False on timeout."""
    def close(self, code: int = 1000, reason: str = ...) -> None:
        """Sends what is queued, then closes; a room member leaves its room (and releases
        it, if it held it open). A closed member ignores what it is sent."""
    def release(self) -> None:
        """Closes `fd` now rather than when collected. Only once nothing waits on it."""

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
    def release(self) -> None:
        """Lets go of the native room (its server closed it); the methods above then raise
        RuntimeError (`peer_count` is 0)."""

@final
class RoomRegistry:
    """The rooms of a server by id, shared by its wires; Python opens and closes them when
    `events()` asks."""

    def __new__(
        cls,
        max_document_bytes: int = ...,
        max_awareness_state_bytes: int = ...,
        max_awareness_per_second: int = ...,
        max_waiting_bytes: int = ...,
    ) -> RoomRegistry: ...
    @property
    def fd(self) -> int:
        """Readable when `events()` has something."""
    def events(self) -> list[tuple[str, str]]:
        """("open", id), ("close", id), and ("stopped", "") once a wire has ended its peers."""
    def opened(self, id: str, room: RoomCore) -> None:
        """The room asked for by an "open" event is ready: its waiting peers join it."""
    def open_failed(self, id: str, reason: str) -> None: ...
    def failed(self, id: str, room: RoomCore, code: int, reason: str) -> int:
        """The open room `id` failed: forgotten (the next join opens a fresh one), its peers
        (and any just joining it) closed with `code` and `reason`; how many it closed."""
    def closed(self, id: str) -> None:
        """The room asked for by a "close" event is closed."""
    def open_rooms(self) -> list[str]: ...
    def fail_waiters(self) -> None:
        """Fails every join still waiting for a room."""
    def close(self) -> None:
        """Fails waiting joins and closes `fd` now; later events are dropped."""
    def join(self, id: str) -> PendingJoin:
        """Starts joining room `id` as an in-process peer, opening it first if needed."""

@final
class PendingJoin:
    """An in-process peer on its way into a room: wait for `fd` until `done`."""

    @property
    def fd(self) -> int:
        """Readable once done; the endpoint reuses it."""
    @property
    def done(self) -> bool: ...
    def endpoint(self) -> Endpoint:
        """The room's new peer, holding the room open until closed. ConnectionError if the
        room could not be opened."""
    def keep_open(self) -> None:
        """Gives the join up but keeps the room open until a peer joins and leaves.
        ConnectionError if the room could not be opened."""

@final
class WebSocketServer:
    """The native WebSocket server of a registry's rooms."""

    def __new__(
        cls,
        rooms: RoomRegistry,
        max_message_bytes: int = ...,
        max_connections: int = ...,
        ping_interval: float = ...,
        idle_timeout: float = ...,
        write_timeout: float = ...,
        authorize: bool = False,
        token_secret: bytes | None = None,
        allowed_origins: list[str] | None = None,
        auth_timeout: float = ...,
        max_pending_messages: int = ...,
        max_pending_bytes: int = ...,
    ) -> WebSocketServer:
        """`authorize`: ask Python (`auth_events()`) about connections without a token.
        ValueError for a token secret under 16 bytes."""
    def start(self, host: str, port: int) -> int:
        """Binds and starts serving; returns the bound port. Raises OSError if it cannot bind."""
    @property
    def auth_fd(self) -> int:
        """Readable when `auth_events()` has something; -1 without `authorize`."""
    def auth_events(
        self,
    ) -> tuple[list[tuple[int, str, str, str, list[tuple[str, str]], str, int]], list[int]]:
        """What happened since the last call: connections now waiting for a decision, as
        (id, path, room, query, headers, host, port), oldest first; and the ids of connections
        that stopped waiting undecided since (closed at a cap or deadline, gone, or the server
        stopping): the hook deciding one may be cancelled."""
    def decide(
        self, id: int, allow: bool, read_only: bool, identity: str | None, code: int, reason: str
    ) -> bool:
        """Lets connection `id` in, or closes it with `code` and `reason`; False if it is not
        waiting any more."""
    def connections(
        self, room: str
    ) -> list[
        tuple[tuple[int, str, str, str, list[tuple[str, str]], str, int], str | None, bool, bool]
    ]:
        """The connections of `room` let in: (request, identity, read_only, joined)."""
    def close_connections(self, room: str, ids: list[int] | None, code: int, reason: str) -> int:
        """Closes connections of `room` (`ids`, or all); none of their updates is applied once
        this returns. Returns how many."""
    def set_read_only(self, room: str, ids: list[int] | None, read_only: bool) -> int:
        """Changes the access of connections of `room` (`ids`, or all), at once. Returns how
        many."""
    def stop(self) -> None:
        """Stops accepting and closes every connection with 1001; the registry's "stopped"
        event follows."""

@final
class PipeServer:
    """The pipe wire's server side, for a registry's rooms."""

    def __new__(cls, rooms: RoomRegistry, max_message_bytes: int = ...) -> PipeServer: ...
    def connect(self, id: str) -> int:
        """Serves one end of a new socketpair as a peer of room `id`; returns the other end
        (close-on-exec, owned by the caller)."""
    def attach(self, id: str, sender: int, receiver: int) -> None:
        """Serves a peer of room `id` over descriptors it takes ownership of: one socket if
        `sender == receiver`, else the sending and receiving ends."""
    def stop(self) -> None:
        """Ends every peer after what was queued for it; the registry's "stopped" event
        follows."""

def frame_step1(state_vector: bytes) -> bytes: ...
def frame_step2(update: bytes) -> bytes: ...
def frame_update(update: bytes) -> bytes: ...
def frame_awareness(payload: bytes) -> bytes: ...
def update_fits(update: bytes, state_vector: bytes) -> bool:
    """Whether `update` integrates into a document at `state_vector` without a gap in any
    client's clocks (raises ValueError for bytes the guard refuses)."""

def set_memory_limit(limit: int) -> None:
    """Sets the process-wide limit of what peers may make wiredb hold, in bytes (ValueError
    for 0)."""

def memory_usage() -> tuple[int, int]:
    """(bytes held for peers now, the limit)."""

def frame_token(token: str) -> bytes:
    """An auth message carrying an access token (a connection's first frame)."""

#: The shortest token secret accepted (shorter ones can be guessed offline from one token).
MIN_SECRET_BYTES: int

def mint_token(
    secret: bytes, room: str, read_only: bool, expires_at: int, subject: str | None = None
) -> str:
    """A signed token (HS256 JWT) for `room`; ValueError for a secret under 16 bytes."""

def verify_token(secret: bytes, token: str, room: str) -> tuple[bool, int, str | None]:
    """(read_only, expires_at, subject) of a valid token for `room`; ValueError saying why not."""

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
        create_lazily: bool = False,
    ) -> FileStore:
        """Starts loading `path` into `room`, then appends every update the room applies
        (with `create_lazily`, a missing file is created at the first write, not now)."""
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
