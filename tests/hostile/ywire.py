"""What the attack tests speak, written by hand so that an attack can say exactly what it
means (and break the rules on purpose): y-protocols messages, crafted v1 updates, and an RFC
6455 client side over a plain socket (blocking) or asyncio streams.

Shared by tests/test_attacks.py (which puts this folder on sys.path) and the attack scripts
next to it. Nothing here depends on wiredb.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

# -- lib0 encoding -----------------------------------------------------------------------------


def varuint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def varbuf(data: bytes) -> bytes:
    return varuint(len(data)) + data


def read_varuint(data: bytes, pos: int) -> tuple[int, int]:
    """The varuint at `pos`, and the position after it."""
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def read_varbuf(data: bytes, pos: int) -> tuple[bytes, int]:
    length, pos = read_varuint(data, pos)
    return data[pos : pos + length], pos + length


# -- y-protocols messages ----------------------------------------------------------------------

SYNC, AWARENESS, AUTH, QUERY_AWARENESS = 0, 1, 2, 3
STEP1, STEP2, UPDATE = 0, 1, 2


def sync_step1(state_vector: bytes = b"\x00") -> bytes:
    return b"\x00\x00" + varbuf(state_vector)


def sync_step2(update: bytes) -> bytes:
    return b"\x00\x01" + varbuf(update)


def update_message(update: bytes) -> bytes:
    return b"\x00\x02" + varbuf(update)


def awareness_message(states: list[tuple[int, int, str]]) -> bytes:
    """An awareness update of (client id, clock, JSON state) entries."""
    body = bytearray(varuint(len(states)))
    for client, clock, state in states:
        body += varuint(client) + varuint(clock) + varbuf(state.encode())
    return b"\x01" + varbuf(bytes(body))


@dataclass(frozen=True)
class Message:
    kind: int  # SYNC, AWARENESS, AUTH, QUERY_AWARENESS or unknown
    sub: int | None  # the sync or auth sub-type
    payload: bytes


def read_messages(frame: bytes) -> Iterator[Message]:
    """The messages of a frame (several may be back to back); stops at an unknown type."""
    pos = 0
    while pos < len(frame):
        kind, pos = read_varuint(frame, pos)
        if kind in (SYNC, AUTH):
            sub, pos = read_varuint(frame, pos)
            payload, pos = read_varbuf(frame, pos)
            yield Message(kind, sub, payload)
        elif kind == AWARENESS:
            payload, pos = read_varbuf(frame, pos)
            yield Message(kind, None, payload)
        else:
            yield Message(kind, None, b"")
            if kind != QUERY_AWARENESS:
                return


# -- crafted v1 updates ------------------------------------------------------------------------

# Item info bits (Yjs' encoding): has a left origin, has a right origin; content ref 4 = string.
_HAS_ORIGIN, _HAS_RIGHT_ORIGIN, _STRING = 0x80, 0x40, 0x04


def text_chain(client: int, start: int, count: int, *, prepend: bool, root: str = "t") -> bytes:
    """A v1 update of `count` one-character items of `client` from clock `start`, in the root
    text `root`, each linked to the item of the clock before it: as its right origin
    (`prepend`: every character typed before the previous one, the costliest shape to hold)
    or as its left origin (appends). The item at clock 0 is the first in the text; an update
    starting later waits for the items before it.

    Built without yrs: pycrdt takes minutes to produce a million prepends."""
    link = _HAS_RIGHT_ORIGIN if prepend else _HAS_ORIGIN
    client_id = varuint(client)
    linked_head = bytes([link | _STRING]) + client_id
    parts = [b"\x01", varuint(count), client_id, varuint(start)]
    for clock in range(start, start + count):
        if clock == 0:
            # No origin: the item names its parent, a root type.
            parts.append(bytes([_STRING]) + b"\x01" + varbuf(root.encode()) + b"\x01a")
        else:
            parts.append(linked_head + varuint(clock - 1) + b"\x01a")
    parts.append(b"\x00")  # empty delete set
    return b"".join(parts)


def big_text(client: int, size: int, root: str = "t") -> bytes:
    """A v1 update inserting one string of `size` ASCII characters in the root text `root`."""
    content = varbuf(b"x" * size)
    item = bytes([_STRING]) + b"\x01" + varbuf(root.encode()) + content
    return b"\x01\x01" + varuint(client) + b"\x00" + item + b"\x00"


# -- RFC 6455, client side ---------------------------------------------------------------------

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
#: A zero masking key: a valid mask (the server unmasks with it) that leaves the payload as it
#: is, so that 64 MiB frames cost no XOR in Python.
ZERO_MASK = b"\x00\x00\x00\x00"


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bytes | None = ZERO_MASK,
) -> bytes:
    """One WebSocket frame; `mask=None` sends it unmasked (a protocol violation for a
    client)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mask_bit = 0 if mask is None else 0x80
    n = len(payload)
    if n < 126:
        head = bytes([first, mask_bit | n])
    elif n < 1 << 16:
        head = bytes([first, mask_bit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack(">Q", n)
    if mask is None:
        return head + payload
    if mask != ZERO_MASK:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + payload


def handshake_request(port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def close_code(payload: bytes) -> int:
    """The code of a close frame's payload (1005 when it has none)."""
    return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005


class Closed(Exception):
    """The server closed the connection: with a close frame (`code`), or TCP only (1006)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


class BlockingSocket:
    """A WebSocket connection on a blocking socket, for attacks that write frames by hand."""

    def __init__(self, port: int, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._buffer = b""
        self.sock.sendall(handshake_request(port, path))
        head = self._read_until(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"handshake refused: {head[:200]!r}")

    def _fill(self) -> bool:
        data = self.sock.recv(1 << 16)
        self._buffer += data
        return bool(data)

    def _read_until(self, end: bytes) -> bytes:
        while end not in self._buffer:
            if not self._fill():
                raise ConnectionError(f"closed during the handshake: {self._buffer[:200]!r}")
        head, self._buffer = self._buffer.split(end, 1)
        return head

    def _read_exact(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if not self._fill():
                raise Closed(1006)
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> tuple[int, bytes]:
        """The next frame from the server (opcode, payload); raises Closed(1006) on EOF."""
        first, second = self._read_exact(2)
        n = second & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._read_exact(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read_exact(8))[0]
        return first & 0x0F, self._read_exact(n)

    def close_code(self) -> int:
        """Reads until the server closes: its close frame's code, or 1006 if TCP closed (or
        reset) without one."""
        try:
            while True:
                opcode, payload = self.read_frame()
                if opcode == OP_CLOSE:
                    return close_code(payload)
        except Closed as closed:
            return closed.code
        except ConnectionResetError:
            return 1006

    def close(self) -> None:
        self.sock.close()


class AsyncSocket:
    """A WebSocket connection on asyncio streams, for attacks of many connections.

    `rcvbuf` shrinks the socket's receive buffer (before connecting), so that a member that
    never reads stops taking data early and the server has to hold what it sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, path: str, *, rcvbuf: int | None = None) -> AsyncSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 26)
        self = cls(reader, writer)
        writer.write(handshake_request(port, path))
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            raise ConnectionError(f"handshake refused: {head[:200]!r}")
        return self

    async def send(self, message: bytes, opcode: int = OP_BINARY) -> None:
        self.writer.write(frame(opcode, message))
        await self.writer.drain()

    async def read_frame(self) -> tuple[int, bytes]:
        """The next frame (opcode, payload); raises Closed on a close frame or EOF."""
        try:
            first, second = await self.reader.readexactly(2)
            n = second & 0x7F
            if n == 126:
                n = struct.unpack(">H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", await self.reader.readexactly(8))[0]
            payload = await self.reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            raise Closed(1006) from error
        if first & 0x0F == OP_CLOSE:
            raise Closed(close_code(payload))
        return first & 0x0F, payload

    async def messages(self) -> Iterator[Message]:
        """The messages of the next data frame (control frames are skipped)."""
        while True:
            opcode, payload = await self.read_frame()
            if opcode in (OP_BINARY, OP_TEXT):
                return read_messages(payload)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
