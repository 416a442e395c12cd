"""Reading and writing update files (wire-file 0.7.1's format) independently of wiredb: header
`0.0.1\\0`, then each update as a lib0 var-length buffer; wiredb follows each update, inside its
buffer, with a trailer: the byte 0xC3 then the CRC32C of the update (little endian)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

HEADER = b"0.0.1\x00"
TRAILER_MAGIC = 0xC3


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def trailer(update: bytes) -> bytes:
    return bytes([TRAILER_MAGIC]) + crc32c(update).to_bytes(4, "little")


def checked_update(record: bytes) -> bytes | None:
    """The update of a record whose checksum trailer holds, else None (a legacy record)."""
    if len(record) > 5 and record[-5:] == trailer(record[:-5]):
        return record[:-5]
    return None


def updates_of(records: list[bytes]) -> list[bytes]:
    """The updates of records, trailers removed where they hold."""
    return [checked_update(r) or r for r in records]


def encode_varuint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_file(updates: list[bytes], checked: bool = False) -> bytes:
    """A file of `updates`, as the original writes it (or as wiredb does, with `checked`)."""
    records = [u + trailer(u) if checked else u for u in updates]
    return HEADER + b"".join(encode_varuint(len(r)) + r for r in records)


def read_varuint(data: bytes, pos: int) -> tuple[int, int] | None:
    """The lib0 varuint at `pos` and the position after it; None if `data` ends within it."""
    value, shift = 0, 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos
    return None


def parse_records(data: bytes) -> list[bytes]:
    """Every record (trailer included) of a whole file; fails on anything else (a torn or
    interleaved record)."""
    assert data.startswith(HEADER), data[:16]
    records, pos = [], len(HEADER)
    while pos < len(data):
        read = read_varuint(data, pos)
        assert read is not None, f"bad record at {pos}"
        length, pos = read
        assert length > 0 and pos + length <= len(data), f"bad record at {pos}"
        records.append(data[pos : pos + length])
        pos += length
    return records


def complete_records(data: bytes) -> list[bytes]:
    """The records of a file being appended to: every complete one (a record another thread is
    writing may be read cut short; it is left out)."""
    if not data.startswith(HEADER):
        return []
    records, pos = [], len(HEADER)
    while pos < len(data):
        read = read_varuint(data, pos)
        if read is None:
            break
        length, at = read
        if at + length > len(data):
            break
        records.append(data[at : at + length])
        pos = at + length
    return records


def read_records(path: Path) -> list[bytes]:
    return parse_records(path.read_bytes())


def load_doc(path: Path) -> Doc[Any]:
    doc: Doc[Any] = Doc()
    for update in read_records(path):
        doc.apply_update(update)
    return doc


def text_in(path: Path, name: str = "text") -> str:
    return str(load_doc(path).get(name, type=Text))


def text_updates(parts: list[str], name: str = "text", client_id: int | None = None) -> list[bytes]:
    """One update per part, each appending it to the text `name` of one document."""
    doc: Doc[Any] = Doc() if client_id is None else Doc(client_id=client_id)
    text = doc.get(name, type=Text)
    updates: list[bytes] = []
    for part in parts:
        before = doc.get_state()
        text += part
        updates.append(doc.get_update(before))
    return updates
