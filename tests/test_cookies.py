"""The `Cookie` headers an authorization hook is shown are parsed in linear time: a client
sending megabytes of backslashes (quadratic for `http.cookies` before CPython 3.11.10,
CVE-2024-7592) cannot stall the event loop that decides every other connection."""

from __future__ import annotations

import socket
import threading
from functools import partial
from http.cookies import SimpleCookie

import pytest
from anyio import CapacityLimiter, Event, create_task_group, fail_after, to_thread

from wire_websocket import Allow, AsyncWebSocketClient, AsyncWebSocketServer, Request

#: Worst case of the old parser: a quoted value of escaped backslashes.
ADVERSARIAL = '"' + "\\\\" * 30_000 + '"'


class CountingStr(str):
    """A string that counts the characters its `find` calls look at."""

    looked_at = 0

    def find(self, sub: str, start: int | None = None, end: int | None = None) -> int:  # type: ignore[override]
        first = 0 if start is None else start
        last = len(self) if end is None else min(end, len(self))
        found = super().find(sub, first, last)
        CountingStr.looked_at += max(0, (found + len(sub) if found >= 0 else last) - first)
        return found


@pytest.mark.parametrize(
    "header",
    [
        "session=s3cr3t",
        "a=1; b=two; c=",
        'quoted="a b"; escaped="x\\"y\\\\z"; octal="\\073\\054"',
        "  spaced = value ;trailing=1;",
        "$Version=1; name=v",
    ],
)
def test_plain_headers_read_as_http_cookies_reads_them(header: str) -> None:
    from wire_websocket._auth import parse_cookies

    jar: SimpleCookie = SimpleCookie()
    jar.load(header)
    expected = {name: morsel.value for name, morsel in jar.items()}
    parsed = parse_cookies(header)
    assert {name: parsed[name] for name in expected} == expected


def test_malformed_pairs_are_skipped() -> None:
    from wire_websocket._auth import parse_cookies

    assert parse_cookies("novalue; =noname; ok=1; ;;") == {"ok": "1"}


def test_the_parser_looks_at_each_character_a_bounded_number_of_times() -> None:
    from wire_websocket._auth import parse_cookies

    for pairs in (1, 3, 30):
        header = CountingStr("; ".join(f"c{i}={ADVERSARIAL}" for i in range(pairs)))
        CountingStr.looked_at = 0
        cookies = parse_cookies(header)
        assert cookies["c0"] == "\\" * 30_000
        assert len(cookies) == pairs
        # `;` then `=`: at most twice each, never a rescan from an earlier position.
        assert CountingStr.looked_at <= 2 * len(header)
    many = CountingStr("x=1;" * 50_000)
    CountingStr.looked_at = 0
    assert parse_cookies(many) == {"x": "1"}
    assert CountingStr.looked_at <= 2 * len(many)


#: What fits in a request head (16 KiB): the old parser spent about half a second on each.
IN_A_HEAD = '"' + "\\\\" * 7_000 + '"'
ATTACKERS = 40


def attack(port: int, sent: list[int], all_sent: threading.Event, release: threading.Event) -> None:
    """A WebSocket handshake with a 14 KB adversarial cookie, from a thread (the event loop
    may be the one stalled); the connection is held, waiting for its decision, until
    `release`."""
    head = (
        "GET /attack HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nCookie: c={IN_A_HEAD}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=60) as stream:
        stream.sendall(head.encode())
        # The handshake's answer (101, sent natively): the request is queued for the hook.
        stream.recv(1024)
        sent.append(1)
        if len(sent) == ATTACKERS:
            all_sent.set()
        release.wait(60)


@pytest.mark.anyio
async def test_an_honest_client_gets_in_while_adversarial_cookies_arrive() -> None:
    seen: list[Request] = []
    all_seen = Event()

    def authorize(request: Request) -> Allow:
        seen.append(request)
        if sum(r.room == "attack" for r in seen) == ATTACKERS:
            all_seen.set()
        return Allow()

    async with AsyncWebSocketServer(
        host="127.0.0.1", port=0, authorize=authorize, auth_timeout=60
    ) as server:
        sent: list[int] = []
        all_sent, release = threading.Event(), threading.Event()
        async with create_task_group() as tg:
            try:
                # The old parser spent about 17 s of the event loop on these requests.
                with fail_after(10):
                    # Threads of their own: anyio's default pool has 40.
                    limiter = CapacityLimiter(ATTACKERS)
                    for _ in range(ATTACKERS):
                        tg.start_soon(
                            partial(to_thread.run_sync, limiter=limiter),
                            attack,
                            server.port,
                            sent,
                            all_sent,
                            release,
                        )
                    assert await to_thread.run_sync(all_sent.wait, 10)
                    # Every attacker waits for its decision (the hook may not have seen any
                    # yet): the honest client comes in while they are parsed.
                    async with AsyncWebSocketClient(
                        "honest", host="127.0.0.1", port=server.port, cookies={"session": "s"}
                    ) as honest:
                        # Let in and synced: the hook decided it.
                        await honest.synchronized.wait()
                # The attack did reach the hook, parsed.
                with fail_after(10):
                    await all_seen.wait()
            finally:
                # Before the task group waits for the attackers.
                release.set()
    assert any(r.cookies == {"session": "s"} for r in seen)
    attacks = [r for r in seen if r.room == "attack"]
    assert all(r.cookies["c"] == "\\" * 7_000 for r in attacks)
