"""Reading and writing update files (wire-file 0.7.1's format) independently of wiredb: header
`0.0.1\\0`, then each update as a lib0 var-length buffer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

HEADER = b"0.0.1\x00"


def encode_varuint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_file(updates: list[bytes]) -> bytes:
    return HEADER + b"".join(encode_varuint(len(u)) + u for u in updates)


def parse_records(data: bytes) -> list[bytes]:
    """Every record of a whole file; fails on anything else (a torn or interleaved record)."""
    assert data.startswith(HEADER), data[:16]
    records, pos = [], len(HEADER)
    while pos < len(data):
        length, shift = 0, 0
        while True:
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        assert length > 0 and pos + length <= len(data), f"bad record at {pos}"
        records.append(data[pos : pos + length])
        pos += length
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
