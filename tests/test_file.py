"""The file wire's clients: wire-file 0.7.1's behaviour, and what it lost that we keep."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from anyio import CancelScope, create_task_group, fail_after, sleep
from pycrdt import Doc, Map, Text

from helpers import wait_until
from steady_stream import check_bounded, part, stream
from update_files import (
    HEADER,
    encode_file,
    load_doc,
    read_records,
    text_in,
    text_updates,
)
from wire_file import AsyncFileClient, FileClient

pytestmark = pytest.mark.anyio


async def wait_for_file(path: Path, predicate: Any, timeout: float = 10) -> None:
    """Waits until `predicate(path)` holds: the file is written by another thread, and a file
    has no event to wait on, so it is re-read until then."""
    with fail_after(timeout):
        while not (path.exists() and predicate(path)):
            await sleep(0.005)


async def test_a_document_round_trips_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "doc.y"
    async with AsyncFileClient(path=path) as client:
        assert client.version == "0.0.1"
        client.doc.get("text", type=Text).insert(0, "Hello")
        client.doc.get("map", type=Map)["k"] = [1, 2]
    assert path.read_bytes().startswith(HEADER)
    async with AsyncFileClient(path=path) as client:
        assert str(client.doc.get("text", type=Text)) == "Hello"
        assert client.doc.get("map", type=Map).to_py() == {"k": [1.0, 2.0]}
        assert client.synchronized.is_set()


async def test_opening_syncs_the_file_and_the_document_both_ways(tmp_path: Path) -> None:
    path = tmp_path / "doc.y"
    path.write_bytes(encode_file(text_updates(["from the file"], name="file")))
    doc: Doc[Any] = Doc()
    doc.get("doc", type=Text).insert(0, "from the doc")
    async with AsyncFileClient(doc=doc, path=path) as client:
        assert client.doc is doc
        assert str(doc.get("file", type=Text)) == "from the file"
    # What the document had that the file lacked was appended.
    assert len(read_records(path)) == 2
    on_disk = load_doc(path)
    assert str(on_disk.get("doc", type=Text)) == "from the doc"
    assert str(on_disk.get("file", type=Text)) == "from the file"


async def test_changes_are_appended_as_they_happen(tmp_path: Path) -> None:
    path = tmp_path / "doc.y"
    async with AsyncFileClient(path=path) as client:
        text = client.doc.get("text", type=Text)
        for i in range(5):
            text += f"{i},"
            await wait_for_file(path, lambda p: text_in(p) == str(text))  # noqa: B023
    assert text_in(path) == "0,1,2,3,4,"


async def test_write_delay_coalesces_the_window_into_one_write_flushed_on_close(
    tmp_path: Path,
) -> None:
    path = tmp_path / "doc.y"
    async with AsyncFileClient(path=path, write_delay=3600) as client:
        text = client.doc.get("text", type=Text)
        for part in "abcde":
            text += part  # five transactions
        await sleep(0.05)
        assert read_records(path) == [], "written before the delay passed"
    # The original loses what is pending when it closes: here it is written, in one record.
    records = read_records(path)
    assert len(records) == 1
    assert text_in(path) == "abcde"


async def test_what_the_document_brings_to_the_sync_is_written_at_once(tmp_path: Path) -> None:
    path = tmp_path / "doc.y"
    doc: Doc[Any] = Doc()
    doc.get("text", type=Text).insert(0, "brought")
    async with AsyncFileClient(doc=doc, path=path, write_delay=3600):
        await wait_for_file(path, lambda p: text_in(p) == "brought")


async def test_write_delay_writes_without_closing(tmp_path: Path) -> None:
    path = tmp_path / "doc.y"
    async with AsyncFileClient(path=path, write_delay=0.05) as client:
        text = client.doc.get("text", type=Text)
        text += "x"
        text += "y"
        await wait_for_file(path, lambda p: text_in(p) == "xy")
        assert len(read_records(path)) == 1


async def test_write_delay_is_bounded_for_a_steady_stream(tmp_path: Path) -> None:
    """An edit every 20 ms for about 1.5 s, with `write_delay=0.2`: each edit waits at most
    0.2 s, so the file fills while the stream goes on (the original restarted its wait on
    every edit, and wrote nothing until the stream stopped)."""
    path = tmp_path / "doc.y"
    async with AsyncFileClient(path=path, write_delay=0.2) as client:
        seen = await stream(client.doc.get("text", type=Text), path)
    check_bounded(seen)
    assert text_in(path) == "".join(part(i) for i in range(seen.edits))


async def test_a_change_made_within_write_delay_of_a_cancelled_exit_is_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "doc.y"
    with CancelScope() as scope:
        async with AsyncFileClient(path=path, write_delay=3600) as client:
            client.doc.get("text", type=Text).insert(0, "kept")
            scope.cancel()
            await sleep(1)
    assert scope.cancelled_caught
    assert text_in(path) == "kept"


async def test_squash_compacts_on_open_and_keeps_the_file_compact(tmp_path: Path) -> None:
    path = tmp_path / "doc.y"
    path.write_bytes(encode_file(text_updates(["a", "b", "c"])))
    async with AsyncFileClient(path=path, squash=True) as client:
        assert len(read_records(path)) == 1
        text = client.doc.get("text", type=Text)
        assert str(text) == "abc"
        text += "d"
        await wait_for_file(path, lambda p: text_in(p) == "abcd")
        assert len(read_records(path)) == 1
        text += "e"
    assert len(read_records(path)) == 1
    assert text_in(path) == "abcde"
    assert [p.name for p in tmp_path.iterdir()] == ["doc.y"], "no temporary file left"


async def test_a_torn_last_record_loads_the_prefix_at_every_byte_offset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The last update is over 127 bytes, so its length prefix is two bytes and can tear too.
    updates = text_updates(["kept,", "also kept,", "torn" * 40])
    assert len(updates[-1]) > 127
    whole = encode_file(updates)
    good = len(encode_file(updates[:2]))
    path = tmp_path / "doc.y"
    for cut in range(good + 1, len(whole)):
        path.write_bytes(whole[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="wire_file"):
            async with AsyncFileClient(path=path) as client:
                text = client.doc.get("text", type=Text)
                assert str(text) == "kept,also kept,", cut
                text += "new"
        assert any("torn" in r.getMessage() for r in caplog.records), cut
        # The tail was cut off and the new record appended after the prefix.
        assert text_in(path) == "kept,also kept,new", cut
        assert len(read_records(path)) == 3


async def test_a_file_of_another_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "doc.y"
    path.write_bytes(b"0.0.2\x00\x02\x00\x00")
    with pytest.raises(RuntimeError) as raised:
        async with AsyncFileClient(path=path):
            pass  # pragma: no cover
    assert str(raised.value) == 'File version mismatch (got "0.0.2", expected "0.0.1")'
    assert path.read_bytes() == b"0.0.2\x00\x02\x00\x00", "left as it was"
    with pytest.raises(RuntimeError, match="File version mismatch"):
        with FileClient(path=path):
            pass  # pragma: no cover


async def test_a_missing_directory_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        async with AsyncFileClient(path=tmp_path / "missing" / "doc.y"):
            pass  # pragma: no cover


async def test_two_clients_of_one_path_never_interleave_half_records(tmp_path: Path) -> None:
    path = tmp_path / "doc.y"
    async with (
        AsyncFileClient(path=path) as a,
        AsyncFileClient(path=path) as b,
    ):

        async def write(client: AsyncFileClient, name: str) -> None:
            text = client.doc.get(name, type=Text)
            for i in range(200):
                text += f"{i},"
                if i % 10 == 0:
                    await sleep(0)

        async with create_task_group() as tg:
            tg.start_soon(write, a, "a")
            tg.start_soon(write, b, "b")
    expected = "".join(f"{i}," for i in range(200))
    on_disk = load_doc(path)  # parses every record of the whole file
    assert str(on_disk.get("a", type=Text)) == expected
    assert str(on_disk.get("b", type=Text)) == expected


async def test_without_auto_push_changes_are_written_on_push(tmp_path: Path) -> None:
    path = tmp_path / "doc.y"
    async with AsyncFileClient(path=path, auto_push=False) as client:
        client.doc.get("text", type=Text).insert(0, "pushed")
        await sleep(0.05)
        assert read_records(path) == []
        client.push()
        await wait_for_file(path, lambda p: text_in(p) == "pushed")


async def test_without_auto_pull_the_file_is_applied_on_pull(tmp_path: Path) -> None:
    path = tmp_path / "doc.y"
    path.write_bytes(encode_file(text_updates(["stored"])))
    async with AsyncFileClient(path=path, auto_pull=False) as client:
        text = client.doc.get("text", type=Text)
        assert str(text) == ""
        await client.pull()
        await wait_until(client.doc, lambda: str(text) == "stored")
        assert client.synchronized.is_set()


def test_the_blocking_client_writes_on_pull_and_push(tmp_path: Path) -> None:
    path = tmp_path / "doc.y"
    path.write_bytes(encode_file(text_updates(["file,"])))
    doc: Doc[Any] = Doc()
    doc.get("doc", type=Text).insert(0, "doc")
    with FileClient(doc=doc, path=path, write_delay=3600) as client:
        assert client.version == "0.0.1"
        client.pull()
        assert client.synchronized
        text = client.doc.get("text", type=Text)
        assert str(text) == "file,"
        # pull() returned once the document's part of the sync was written.
        assert str(load_doc(path).get("doc", type=Text)) == "doc"
        text += "pushed"
        assert text_in(path) == "file,"
        client.push()
        assert text_in(path) == "file,pushed"
        text += "left"
    assert text_in(path) == "file,pushed", "not pushed: not written (auto_push=False)"


def test_the_blocking_client_with_auto_push_writes_everything_by_exit(tmp_path: Path) -> None:
    path = tmp_path / "doc.y"
    with FileClient(path=path, auto_push=True, write_delay=3600) as client:
        client.pull()
        text = client.doc.get("text", type=Text)
        for part in "abc":
            text += part
    assert text_in(path) == "abc"
    with FileClient(path=path) as client:
        client.pull()
        assert str(client.doc.get("text", type=Text)) == "abc"


def test_file_io_errors_surface_as_os_errors(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        with FileClient(path=tmp_path):
            pass  # pragma: no cover
