"""wss:// and https:// hosts: the client speaks TLS (rustls), verifying the server."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme
from anyio import (
    BrokenResourceError,
    EndOfStream,
    connect_tcp,
    create_task_group,
    create_tcp_listener,
)
from anyio.abc import ByteStream, SocketAttribute, SocketStream
from anyio.streams.tls import TLSStream
from pycrdt import Text

from helpers import wait_until
from wire_websocket import AsyncWebSocketClient, AsyncWebSocketServer

pytestmark = pytest.mark.anyio


async def pump(source: ByteStream, sink: ByteStream) -> None:
    try:
        async for chunk in source:
            await sink.send(chunk)
    except Exception:
        pass
    finally:
        await sink.aclose()


@asynccontextmanager
async def tls_terminating_proxy(target_port: int, context: ssl.SSLContext) -> AsyncIterator[int]:
    """A TLS front for the plain server, as a reverse proxy would be."""
    listener = await create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)

    async def handle(client: SocketStream) -> None:
        async with client:
            try:
                tls = await TLSStream.wrap(
                    client, server_side=True, ssl_context=context, standard_compatible=False
                )
            except (ssl.SSLError, BrokenResourceError, EndOfStream):
                return  # an untrusting client hung up: nothing to proxy
            async with tls, await connect_tcp("127.0.0.1", target_port) as upstream:
                async with create_task_group() as tg:
                    tg.start_soon(pump, tls, upstream)
                    tg.start_soon(pump, upstream, tls)

    async with listener, create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield port
        tg.cancel_scope.cancel()


@pytest.fixture
def certificate_authority(tmp_path: Path) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


async def test_wss_clients_sync_through_tls_and_verify_the_server(
    certificate_authority: tuple[trustme.CA, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, ca_path = certificate_authority
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    async with AsyncWebSocketServer(host="127.0.0.1", port=0) as server:
        async with tls_terminating_proxy(server.port, context) as tls_port:
            # Not trusted yet: the handshake fails, and says so.
            monkeypatch.delenv("SSL_CERT_FILE", raising=False)
            with pytest.raises(ConnectionError, match=r"(?i)certificate|unknown ?issuer"):
                async with AsyncWebSocketClient("tls", host="wss://localhost", port=tls_port):
                    pass
            # rustls reads trusted roots from SSL_CERT_FILE, like OpenSSL does.
            monkeypatch.setenv("SSL_CERT_FILE", str(ca_path))
            assert os.environ["SSL_CERT_FILE"] == str(ca_path)
            async with (
                AsyncWebSocketClient("tls", host="wss://localhost", port=tls_port) as secure,
                AsyncWebSocketClient("tls", host="https://localhost", port=tls_port) as https,
                AsyncWebSocketClient("tls", host="127.0.0.1", port=server.port) as plain,
            ):
                secure.doc.get("text", type=Text).insert(0, "over TLS")
                for client in (https, plain):
                    text: Text = client.doc.get("text", type=Text)
                    await wait_until(client.doc, lambda: str(text) == "over TLS")  # noqa: B023
