"""Files cross between this implementation and the real wire-file 0.7.1, both ways.

The original needs `pycrdt<0.13`, which this environment's pycrdt is not, so it is installed in
a virtualenv of its own (`.venv-original`, made by `scripts/test.sh` or, failing that, here) and
driven through a subprocess. Under CI (`CI=true`) failing to install it fails these tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map, Text

from update_files import checked_update, read_records, trailer
from wire_file import AsyncFileClient, FileClient, file_room_factory
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer

pytestmark = pytest.mark.anyio

ORIGINAL = ["wiredb==0.7.1", "wire-file==0.7.1"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def original_python() -> str:
    """The interpreter of a virtualenv holding the original wiredb and wire-file 0.7.1."""
    configured = os.environ.get("WIREDB_ORIGINAL_PYTHON")
    if configured:
        return configured
    venv = Path(os.environ.get("WIREDB_ORIGINAL_VENV", ROOT / ".venv-original"))
    python = venv / "bin" / "python"
    marker = venv / "installed.txt"
    if python.exists() and marker.exists() and marker.read_text().split() == ORIGINAL:
        return str(python)
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *ORIGINAL],
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (subprocess.SubprocessError, OSError) as error:
        detail = getattr(error, "stderr", b"") or b""
        message = f"cannot install {' '.join(ORIGINAL)}: {error}\n{detail.decode(errors='replace')}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    marker.write_text(" ".join(ORIGINAL))
    return str(python)


ORIGINAL_WRITE = textwrap.dedent(
    """
    import json, sys
    from pycrdt import Map, Text
    from wire_file import FileClient

    path, parts = sys.argv[1], json.loads(sys.argv[2])
    with FileClient(path=path) as client:
        client.pull()
        text = client.doc.get("text", type=Text)
        for part in parts:
            text += part
            client.push()  # the original writes one record per push
        client.doc.get("map", type=Map)["by"] = "original"
        client.push()
    """
)

ORIGINAL_READ = textwrap.dedent(
    """
    import json, sys
    import anyio
    from pycrdt import Map, Text
    from wire_file import AsyncFileClient

    async def main():
        async with AsyncFileClient(path=sys.argv[1], squash=sys.argv[2] == "squash") as client:
            doc = client.doc
            print(json.dumps({
                "text": str(doc.get("text", type=Text)),
                "map": doc.get("map", type=Map).to_py(),
            }))

    anyio.run(main)
    """
)


def run_original(python: str, script: str, *args: str) -> str:
    # Without PYTHONPATH: a path to this checkout's packages would shadow the original's.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [python, "-c", script, *args], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def original_reads(python: str, path: Path, squash: bool = False) -> dict[str, Any]:
    out = run_original(python, ORIGINAL_READ, str(path), "squash" if squash else "")
    return json.loads(out)  # type: ignore[no-any-return]


def content(doc: Doc[Any]) -> dict[str, Any]:
    return {"text": str(doc.get("text", type=Text)), "map": doc.get("map", type=Map).to_py()}


LONG = "a long part, so that its record's length takes two bytes " * 4


async def test_a_file_written_by_the_original_loads_here(
    tmp_path: Path, original_python: str
) -> None:
    path = tmp_path / "orig.y"
    parts = ["Hello", ", ", LONG, "World"]
    run_original(original_python, ORIGINAL_WRITE, str(path), json.dumps(parts))
    assert len(read_records(path)) >= len(parts)
    expected = {"text": "".join(parts), "map": {"by": "original"}}
    async with AsyncFileClient(path=path) as client:
        assert content(client.doc) == expected
        client.doc.get("map", type=Map)["and"] = "here"
    with FileClient(path=path, squash=True) as client:
        client.pull()
        assert content(client.doc) == {**expected, "map": {"by": "original", "and": "here"}}
    assert len(read_records(path)) == 1
    # And back: the original reads what we appended and squashed.
    assert original_reads(original_python, path) == {
        **expected,
        "map": {"by": "original", "and": "here"},
    }


async def test_a_file_written_here_loads_in_the_original(
    tmp_path: Path, original_python: str
) -> None:
    path = tmp_path / "ours.y"
    # pycrdt >= 0.13 picks 53-bit client IDs, which the original's pycrdt (< 0.13) truncates
    # to 32 bits: it reads such a document, but its own edits after them would point at the
    # wrong client. Documents the original is to edit use 32-bit IDs, as Yjs does.
    doc: Doc[Any] = Doc(client_id=0x1234_5678)
    async with AsyncFileClient(doc=doc, path=path) as client:
        client.doc.get("text", type=Text).insert(0, "Hello")
    async with AsyncFileClient(
        doc=Doc(client_id=0x2345_6789), path=path, write_delay=3600
    ) as client:
        text = client.doc.get("text", type=Text)
        for part in [", ", LONG, "World"]:
            text += part  # coalesced into one record, written on close
        client.doc.get("map", type=Map)["by"] = "wiredb"
    expected: dict[str, Any] = {"text": "Hello, " + LONG + "World", "map": {"by": "wiredb"}}
    assert original_reads(original_python, path) == expected
    # The original appends to our file, and we read its records.
    run_original(original_python, ORIGINAL_WRITE, str(path), json.dumps(["!"]))
    async with AsyncFileClient(path=path) as client:
        assert content(client.doc) == {"text": expected["text"] + "!", "map": {"by": "original"}}
    # The original squashes our file in place; we load the result.
    assert original_reads(original_python, path, squash=True)["text"].endswith("World!")
    assert len(read_records(path)) == 1
    async with AsyncFileClient(path=path) as client:
        assert str(client.doc.get("text", type=Text)).endswith("World!")


async def test_a_native_room_file_loads_in_the_original(
    tmp_path: Path, original_python: str
) -> None:
    async with AsyncWebSocketServer(file_room_factory(tmp_path), host="127.0.0.1", port=0) as s:
        async with AsyncWebSocketClient("room", host="127.0.0.1", port=s.port) as client:
            text = client.doc.get("text", type=Text)
            for part in ["from ", "a ", "room"]:
                text += part
            client.doc.get("map", type=Map)["n"] = 3
    assert original_reads(original_python, tmp_path / "room_updates.y") == {
        "text": "from a room",
        "map": {"n": 3.0},
    }


ORIGINAL_RAW_APPLY = textwrap.dedent(
    """
    import json, sys
    from pycrdt import Decoder, Doc, Map, Text

    # The original's own reading loop (wire_file.client), record by record.
    data = open(sys.argv[1], "rb").read()
    version, messages = data.split(bytes([0]), 1)
    doc, decoder, count = Doc(), Decoder(messages), 0
    while True:
        update = decoder.read_message()
        if not update:
            break
        doc.apply_update(update)
        count += 1
    print(json.dumps({
        "records": count,
        "text": str(doc.get("text", type=Text)),
        "map": doc.get("map", type=Map).to_py(),
    }))
    """
)


async def test_checksum_trailers_cross_both_ways(tmp_path: Path, original_python: str) -> None:
    """Our records carry a checksum trailer inside their buffer; the original's pycrdt ignores
    it (read both by its client and by its raw loop), its own records have none and load here,
    and a file mixing both kinds loads in both implementations."""
    path = tmp_path / "mixed.y"
    doc: Doc[Any] = Doc(client_id=0x1111_2222)
    async with AsyncFileClient(doc=doc, path=path, fsync="always") as client:
        text = client.doc.get("text", type=Text)
        for part in ["ours ", LONG, "ours again "]:
            text += part
            await client.flush()
    records = read_records(path)
    assert len(records) >= 3
    assert all(checked_update(r) is not None for r in records), "every record checksummed"
    assert records[0].endswith(trailer(records[0][:-5]))
    raw = json.loads(run_original(original_python, ORIGINAL_RAW_APPLY, str(path)))
    assert raw == {"records": len(records), "text": "ours " + LONG + "ours again ", "map": {}}

    # The original appends records without a trailer, after ours.
    run_original(original_python, ORIGINAL_WRITE, str(path), json.dumps(["theirs "]))
    records = read_records(path)
    assert checked_update(records[-1]) is None, "the original's record has no trailer"
    # We read both kinds, and append checksummed records after the original's.
    async with AsyncFileClient(doc=Doc(client_id=0x3333_4444), path=path) as client:
        assert str(client.doc.get("text", type=Text)).endswith("theirs ")
        client.doc.get("text", type=Text).insert(0, "first ")
    records = read_records(path)
    assert checked_update(records[-1]) is not None
    kinds = [checked_update(r) is not None for r in records]
    assert True in kinds and False in kinds
    expected = {"text": "first ours " + LONG + "ours again theirs ", "map": {"by": "original"}}
    assert original_reads(original_python, path) == expected
    raw = json.loads(run_original(original_python, ORIGINAL_RAW_APPLY, str(path)))
    assert raw == {"records": len(records), **expected}

    # The original squashes the mixed file into one record of its own; we load it.
    assert original_reads(original_python, path, squash=True) == expected
    records = read_records(path)
    assert len(records) == 1 and checked_update(records[0]) is None
    with FileClient(path=path) as blocking:
        blocking.pull()
        assert str(blocking.doc.get("text", type=Text)) == expected["text"]
