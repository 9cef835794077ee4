"""HTTPClient over real loopback TLS (trustme certificates, trio.serve_ssl_over_tcp on port 0)."""

from __future__ import annotations

import functools
import logging
import ssl
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import h11
import pytest
import trio
import trustme

from trioproxy.errors import UpstreamConnectionError
from trioproxy.upstream import HTTPClient, PoolStatistics, TLSOptions

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

HEADERS = [("content-type", "application/json")]


@dataclass
class Upstream:
    port: int
    sni: list[str | None] = field(default_factory=list)
    alpn: list[str | None] = field(default_factory=list)
    handshake_failures: int = 0
    closed: trio.Event = field(default_factory=trio.Event)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@asynccontextmanager
async def tls_upstream(
    ca: trustme.CA, *, chunks: int = 1, names: tuple[str, ...] = ("localhost", "127.0.0.1")
) -> AsyncIterator[Upstream]:
    """An HTTPS server on 127.0.0.1 with a certificate for `localhost` and 127.0.0.1.

    Each connection answers requests (keep-alive) with `chunks` chunked pieces; with
    `chunks=0` it sends one piece and then waits for the client to go away.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    context.set_alpn_protocols(["h2", "http/1.1"])
    upstream = Upstream(port=0)

    def on_sni(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        upstream.sni.append(name)

    context.sni_callback = on_sni

    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError:
            upstream.handshake_failures += 1
            return
        upstream.alpn.append(stream.selected_alpn_protocol())
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(bytes(await stream.receive_some(65536)))
                elif isinstance(event, h11.EndOfMessage):
                    head = h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")])
                    await stream.send_all(conn.send(head) or b"")
                    for i in range(max(chunks, 1)):
                        await stream.send_all(conn.send(h11.Data(data=b"piece %d;" % i)) or b"")
                    if chunks == 0:
                        await stream.receive_some(65536)  # until the client closes
                        return
                    await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            return
        finally:
            upstream.closed.set()
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        serve = functools.partial(
            trio.serve_ssl_over_tcp, handler, 0, context, host="127.0.0.1", https_compatible=True
        )
        listeners = await nursery.start(serve)
        upstream.port = listeners[0].transport_listener.socket.getsockname()[1]
        yield upstream
        nursery.cancel_scope.cancel()


async def get(client: HTTPClient, url: str, tls: TLSOptions) -> bytes:
    async with client.stream("POST", url, headers=HEADERS, body=b"{}", tls=tls) as resp:
        assert resp.status == 200
        return await resp.aread()


async def test_verified_tls_with_ca_file_sends_sni_and_negotiates_http11(
    ca: trustme.CA, ca_file: str
) -> None:
    async with tls_upstream(ca, chunks=3) as upstream:
        client = HTTPClient(environ={})
        try:
            url = f"https://localhost:{upstream.port}/v1/messages"
            tls = TLSOptions(ca_file=ca_file)
            assert await get(client, url, tls) == b"piece 0;piece 1;piece 2;"
            assert await get(client, url, tls) == b"piece 0;piece 1;piece 2;"
            assert client.statistics() == PoolStatistics(idle=1, active=0, opened=1, reused=1)
        finally:
            await client.aclose()
    assert upstream.sni == ["localhost"]
    assert upstream.alpn == ["http/1.1"]  # offered h2 too; we only ever ask for http/1.1


async def test_unknown_ca_fails_with_a_clear_certificate_error(ca: trustme.CA) -> None:
    async with tls_upstream(ca) as upstream:
        client = HTTPClient(environ={})
        url = f"https://localhost:{upstream.port}/v1/messages"
        with pytest.raises(
            UpstreamConnectionError, match="certificate verification failed"
        ) as info:
            await get(client, url, TLSOptions())  # the system store does not know trustme's CA
        assert str(info.value).startswith(f"https://localhost:{upstream.port}: ")
        assert client.statistics() == PoolStatistics(idle=0, active=0, opened=0, reused=0)
        await client.aclose()


async def test_host_name_mismatch_fails_verification(ca: trustme.CA, ca_file: str) -> None:
    async with tls_upstream(ca, names=("localhost",)) as upstream:
        client = HTTPClient(environ={})
        url = f"https://127.0.0.1:{upstream.port}/"  # trusted CA, but not this name
        with pytest.raises(UpstreamConnectionError, match="certificate verification failed"):
            await get(client, url, TLSOptions(ca_file=ca_file))
        await client.aclose()


async def test_verify_false_connects_and_warns_once_per_origin(
    ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trioproxy.upstream")
    async with tls_upstream(ca) as upstream:
        client = HTTPClient(environ={})
        try:
            url = f"https://localhost:{upstream.port}/"
            tls = TLSOptions(verify=False)
            assert await get(client, url, tls) == b"piece 0;"
            assert await get(client, url, tls) == b"piece 0;"
        finally:
            await client.aclose()
    warnings = [r for r in caplog.records if "verification is turned off" in r.getMessage()]
    assert len(warnings) == 1
    assert f"https://localhost:{upstream.port}" in warnings[0].getMessage()


async def test_cancel_mid_body_closes_the_socket_promptly(ca: trustme.CA, ca_file: str) -> None:
    async with tls_upstream(ca, chunks=0) as upstream:
        client = HTTPClient(environ={})
        url = f"https://localhost:{upstream.port}/"
        with trio.CancelScope() as scope:
            async with client.stream(
                "POST", url, headers=HEADERS, tls=TLSOptions(ca_file=ca_file)
            ) as r:
                async for _ in r.aiter_bytes():
                    scope.cancel()
        start = trio.current_time()
        with trio.fail_after(1):
            await upstream.closed.wait()
        assert trio.current_time() - start < 0.1  # DESIGN.md: the upstream sees EOF within 100 ms
        assert client.statistics().idle == 0
        await client.aclose()


async def test_connection_refused_is_a_connection_error() -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = HTTPClient(environ={})
    with pytest.raises(
        UpstreamConnectionError, match=f"https://127.0.0.1:{port}: connection failed"
    ):
        await get(client, f"https://127.0.0.1:{port}/", TLSOptions())
    await client.aclose()
