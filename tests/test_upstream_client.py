"""HTTPClient against scripted upstreams: a real h11 server on the other half of a memory stream."""

from __future__ import annotations

import base64
import contextlib
import ssl
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

import h11
import pytest
import trio
import trio.lowlevel
import trio.testing
import trustme

from trioproxy._version import __version__
from trioproxy.errors import (
    ConfigError,
    UpstreamConnectionError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from trioproxy.upstream import (
    HTTPClient,
    PoolLimits,
    PoolStatistics,
    Timeouts,
    TLSOptions,
    no_proxy_matches,
    select_proxy,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    Handler = Callable[[trio.abc.Stream], Awaitable[None]]

URL = "http://api.example.com/v1/messages"
ORIGIN = "http://api.example.com:80"
HEADERS = [("content-type", "application/json"), ("x-api-key", "sk-secret-123")]
CHUNKED_HEAD = h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")])


# --- the scripted upstream -----------------------------------------------------------------


class Server:
    """The server side of one connection, written with a real h11.Connection(h11.SERVER)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER)

    async def next_event(self) -> object:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.h11.receive_data(bytes(await self.stream.receive_some(65536)))

    async def receive_request(self) -> tuple[h11.Request, bytes]:
        request = await self.next_event()
        assert isinstance(request, h11.Request)
        body = b""
        while not isinstance(event := await self.next_event(), h11.EndOfMessage):
            assert isinstance(event, h11.Data)
            body += event.data
        return request, body

    def encode(self, *events: h11.Event) -> bytes:
        """The bytes of `events`, for a test that writes several of them in one write."""
        return b"".join(self.h11.send(event) or b"" for event in events)

    async def send(self, *events: h11.Event) -> None:
        for event in events:
            data = self.h11.send(event)
            if data:
                await self.stream.send_all(data)

    async def respond(
        self, status: int = 200, body: bytes = b"ok", headers: list[tuple[str, str]] | None = None
    ) -> None:
        head = [("content-length", str(len(body))), *(headers or [])]
        response = h11.Response(status_code=status, headers=head, reason=b"Fine")
        await self.send(response, h11.Data(data=body))
        await self.send(h11.EndOfMessage())

    async def send_chunked_head(self, status: int = 200) -> None:
        await self.send(
            h11.Response(status_code=status, headers=[("transfer-encoding", "chunked")])
        )

    async def expect_eof(self) -> None:
        """The client closed the connection (the only way this returns)."""
        with contextlib.suppress(trio.BrokenResourceError):  # TLS peer without close_notify
            assert await self.stream.receive_some(65536) == b""

    async def serve_forever(self, body: bytes = b"ok") -> None:
        """Answer every request on this connection until the client closes it."""
        while True:
            try:
                await self.receive_request()
            except (AssertionError, h11.RemoteProtocolError):
                return  # EOF between requests
            await self.respond(body=body)
            self.h11.start_next_cycle()


class Network:
    """A Connector: each new connection runs the next handler on its server half."""

    def __init__(self, nursery: trio.Nursery, handlers: list[Handler]) -> None:
        self._nursery = nursery
        self.handlers = handlers
        self.connects: list[tuple[str, int, bool, str | None]] = []

    async def __call__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None,
        server_hostname: str | None,
        connect_timeout: float,
    ) -> trio.abc.Stream:
        assert connect_timeout > 0
        await trio.lowlevel.checkpoint()  # as opening a socket would
        self.connects.append((host, port, tls is not None, server_hostname))
        client, server = trio.testing.memory_stream_pair()
        self._nursery.start_soon(self.handlers.pop(0), server)
        return client


@asynccontextmanager
async def upstream(
    *handlers: Handler, environ: dict[str, str] | None = None, **kw: object
) -> AsyncIterator[tuple[HTTPClient, Network]]:
    async with trio.open_nursery() as nursery:
        network = Network(nursery, list(handlers))
        client = HTTPClient(connector=network, environ=environ or {}, **kw)  # type: ignore[arg-type]
        try:
            yield client, network
        finally:
            await client.aclose()
    assert not network.handlers, "every scripted connection was used"


async def fetch(client: HTTPClient, url: str = URL, **kw: object) -> tuple[int, bytes]:
    async with client.stream("POST", url, headers=HEADERS, body=b"{}", **kw) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.aread()


async def collect(client: HTTPClient, pieces: list[bytes], **kw: object) -> None:
    """Stream the body of one request into `pieces`, piece by piece."""
    async with client.stream("POST", URL, headers=HEADERS, **kw) as resp:  # type: ignore[arg-type]
        async for piece in resp.aiter_bytes():
            pieces.append(piece)


def stats(idle: int, active: int, opened: int, reused: int) -> PoolStatistics:
    return PoolStatistics(idle=idle, active=active, opened=opened, reused=reused)


# --- requests and bodies ---------------------------------------------------------------------


async def test_request_carries_host_length_identity_encoding_and_user_agent() -> None:
    seen: list[tuple[h11.Request, bytes]] = []

    async def handler(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        seen.append(await server.receive_request())
        await server.respond()
        await server.expect_eof()

    async with upstream(handler) as (client, _):
        given = [*HEADERS, ("Content-Length", "999"), ("Host", "evil"), ("Accept-Encoding", "gzip")]
        async with client.stream("POST", URL + "?beta=true", headers=given, body=b'{"a":1}') as r:
            assert await r.aread() == b"ok"
    request, body = seen[0]
    assert request.method == b"POST"
    assert request.target == b"/v1/messages?beta=true"
    headers = list(request.headers)
    assert (b"host", b"api.example.com") in headers
    assert (b"content-length", b"7") in headers
    assert (b"accept-encoding", b"identity") in headers
    assert (b"user-agent", f"trioproxy/{__version__}".encode()) in headers
    assert (b"x-api-key", b"sk-secret-123") in headers
    assert [name for name, _ in headers].count(b"content-length") == 1
    assert [name for name, _ in headers].count(b"host") == 1
    assert body == b'{"a":1}'


async def test_non_default_port_is_in_the_host_header_and_callers_user_agent_wins() -> None:
    seen: list[h11.Request] = []

    async def handler(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        seen.append((await server.receive_request())[0])
        await server.respond()
        await server.expect_eof()

    async with upstream(handler) as (client, network):
        headers = [("User-Agent", "custom/1")]
        async with client.stream("POST", "http://10.0.0.5:8080/x", headers=headers) as resp:
            await resp.aread()
    assert network.connects == [("10.0.0.5", 8080, False, None)]
    assert (b"host", b"10.0.0.5:8080") in list(seen[0].headers)
    assert [v for k, v in seen[0].headers if k == b"user-agent"] == [b"custom/1"]


async def test_chunked_body_is_streamed_piece_by_piece() -> None:
    pieces = [b"event: a\n", b"data: 1\n\n", b"x" * 5000]
    got = [trio.Event() for _ in pieces]

    async def handler(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        await server.receive_request()
        await server.send_chunked_head()
        for piece, event in zip(pieces, got, strict=True):
            await server.send(h11.Data(data=piece))
            await event.wait()  # the client saw this piece before the next one exists
        await server.send(h11.EndOfMessage())
        await server.expect_eof()

    async with (
        upstream(handler) as (client, _),
        client.stream("POST", URL, headers=HEADERS) as resp,
    ):
        assert resp.status == 200
        assert ("transfer-encoding", "chunked") in resp.headers
        received = []
        async for piece in resp.aiter_bytes():
            received.append(piece)
            got[len(received) - 1].set()
    assert received == pieces


async def test_chunks_already_received_together_come_out_as_one_piece() -> None:
    # One upstream write of many HTTP chunks (as a burst of SSE events arrives): the client hands
    # out everything h11 has buffered in one piece, so the proxy decodes and writes once per read.
    async def handler(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        await server.receive_request()
        burst = [h11.Data(data=b"event %d\n" % i) for i in range(50)]
        await stream.send_all(server.encode(CHUNKED_HEAD, *burst))  # head + 50 chunks, one write
        await server.send(h11.Data(data=b"later"))
        await server.send(h11.EndOfMessage())
        await server.serve_forever()

    async with upstream(handler) as (client, _):
        pieces: list[bytes] = []
        await collect(client, pieces)
        assert pieces[0] == b"".join(b"event %d\n" % i for i in range(50))
        assert b"".join(pieces) == pieces[0] + b"later"
        assert client.statistics() == stats(idle=1, active=0, opened=1, reused=0)


async def test_body_end_buffered_with_the_last_chunks_ends_the_body_and_keeps_the_connection() -> (
    None
):
    async def handler(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        await server.receive_request()
        pieces = [h11.Data(data=piece) for piece in (b"a", b"b", b"c")]
        await stream.send_all(server.encode(CHUNKED_HEAD, *pieces, h11.EndOfMessage()))
        server.h11.start_next_cycle()
        await server.serve_forever(body=b"second")

    async with upstream(handler) as (client, _):
        pieces: list[bytes] = []
        await collect(client, pieces)
        assert pieces == [b"abc"]
        # the connection went back to the pool and carries the next request
        assert await fetch(client) == (200, b"second")
        assert client.statistics() == stats(idle=1, active=0, opened=1, reused=1)


async def test_malformed_framing_after_buffered_chunks_delivers_the_data_then_fails() -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        await server.receive_request()
        good = server.encode(CHUNKED_HEAD, h11.Data(data=b"good"))
        await stream.send_all(good + b"zz-not-hex\r\n")
        await server.expect_eof()

    async with upstream(handler) as (client, _):
        pieces: list[bytes] = []
        with pytest.raises(UpstreamProtocolError, match="invalid HTTP response"):
            await collect(client, pieces)
        assert pieces == [b"good"]
        assert client.statistics() == stats(idle=0, active=0, opened=1, reused=0)


async def test_content_length_body_is_read_whole() -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        await server.receive_request()
        await server.respond(body=b"hello world", headers=[("X-Request-Id", "r1")])
        await server.expect_eof()

    async with (
        upstream(handler) as (client, _),
        client.stream("POST", URL, headers=HEADERS) as resp,
    ):
        assert resp.reason == "Fine"
        assert ("x-request-id", "r1") in resp.headers  # names lower-cased
        assert await resp.aread() == b"hello world"
        assert await resp.aread() == b""  # nothing left


async def test_close_delimited_body_ends_at_eof_and_is_not_pooled() -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        await server.receive_request()
        await stream.send_all(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nfirst ")
        await stream.send_all(b"second")
        await stream.aclose()

    async with upstream(handler) as (client, _):
        assert await fetch(client) == (200, b"first second")
        assert client.statistics() == stats(idle=0, active=0, opened=1, reused=0)


async def test_informational_responses_are_skipped() -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        await server.receive_request()
        await server.send(h11.InformationalResponse(status_code=103, headers=[("link", "</a>")]))
        await server.respond(body=b"final")
        await server.expect_eof()

    async with upstream(handler) as (client, _):
        assert await fetch(client) == (200, b"final")


async def test_non_2xx_status_does_not_raise_and_keeps_the_connection() -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        await server.receive_request()
        await server.respond(429, b'{"error": "slow down"}', headers=[("retry-after", "3")])
        server.h11.start_next_cycle()
        await server.serve_forever()

    async with upstream(handler) as (client, _):
        async with client.stream("POST", URL, headers=HEADERS) as resp:
            assert resp.status == 429
            assert ("retry-after", "3") in resp.headers
            assert await resp.aread() == b'{"error": "slow down"}'
        assert await fetch(client) == (200, b"ok")
        assert client.statistics() == stats(idle=1, active=0, opened=1, reused=1)


async def test_aread_over_the_limit_raises_and_closes_the_connection() -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        await server.receive_request()
        await server.respond(body=b"x" * 100)
        await server.expect_eof()

    async with upstream(handler) as (client, _):
        with pytest.raises(UpstreamProtocolError, match=f"{ORIGIN}: response body longer than 10"):
            async with client.stream("POST", URL, headers=HEADERS) as resp:
                await resp.aread(limit=10)
        assert client.statistics() == stats(idle=0, active=0, opened=1, reused=0)


# --- the pool --------------------------------------------------------------------------------


async def test_keep_alive_connection_is_reused_for_the_next_request() -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        await Server(stream).serve_forever()

    async with upstream(handler) as (client, network):
        assert await fetch(client) == (200, b"ok")
        assert client.statistics() == stats(idle=1, active=0, opened=1, reused=0)
        async with client.stream("POST", URL, headers=HEADERS) as resp:
            assert client.statistics() == stats(idle=0, active=1, opened=1, reused=1)
            await resp.aread()
        assert client.statistics() == stats(idle=1, active=0, opened=1, reused=1)
    assert len(network.connects) == 1


async def test_stopping_right_after_the_last_piece_still_returns_the_connection() -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        await Server(stream).serve_forever(body=b"only piece")

    async with upstream(handler) as (client, _):
        async with client.stream("POST", URL, headers=HEADERS) as resp:
            async for piece in resp.aiter_bytes():
                assert piece == b"only piece"
                break  # the end of the body is already buffered: no need to read on
        assert client.statistics() == stats(idle=1, active=0, opened=1, reused=0)


async def test_connections_are_pooled_per_origin() -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        await Server(stream).serve_forever()

    async with upstream(handler, handler) as (client, network):
        await fetch(client, "http://a.example/x")
        await fetch(client, "http://b.example/x")
        await fetch(client, "http://a.example/y")
        assert [c[0] for c in network.connects] == ["a.example", "b.example"]
        assert client.statistics() == stats(idle=2, active=0, opened=2, reused=1)


async def test_server_closing_a_kept_alive_connection_is_retried_on_a_fresh_one() -> None:
    async def closes_after_one(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        await server.receive_request()
        await server.respond(body=b"one")
        await stream.aclose()  # the server's idle timeout, as far as the client can tell

    async def handler(stream: trio.abc.Stream) -> None:
        await Server(stream).serve_forever(body=b"two")

    async with upstream(closes_after_one, handler) as (client, network):
        assert await fetch(client) == (200, b"one")
        assert await fetch(client) == (200, b"two")
        assert len(network.connects) == 2
        assert client.statistics() == stats(idle=1, active=0, opened=2, reused=1)


async def test_eof_before_the_head_on_a_reused_connection_is_retried() -> None:
    async def drops_second(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        await server.receive_request()
        await server.respond(body=b"one")
        server.h11.start_next_cycle()
        await server.receive_request()
        await stream.aclose()  # read the request, closed without a byte of response

    async def handler(stream: trio.abc.Stream) -> None:
        await Server(stream).serve_forever(body=b"two")

    async with upstream(drops_second, handler) as (client, _):
        assert await fetch(client) == (200, b"one")
        assert await fetch(client) == (200, b"two")


async def test_failure_after_a_response_byte_is_not_retried() -> None:
    async def breaks_second(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        await server.receive_request()
        await server.respond()
        server.h11.start_next_cycle()
        await server.receive_request()
        await stream.send_all(b"HTTP/1.1 200 O")
        await stream.aclose()

    async with upstream(breaks_second) as (client, network):
        await fetch(client)
        with pytest.raises(UpstreamProtocolError, match=ORIGIN):
            await fetch(client)
        assert len(network.connects) == 1


async def test_failure_on_a_fresh_connection_is_not_retried() -> None:
    async def hangs_up(stream: trio.abc.Stream) -> None:
        await Server(stream).receive_request()
        await stream.aclose()

    async with upstream(hangs_up) as (client, network):
        with pytest.raises(UpstreamProtocolError, match="closed before the response head"):
            await fetch(client)
        assert len(network.connects) == 1
        assert client.statistics() == stats(idle=0, active=0, opened=1, reused=0)


async def test_idle_connections_expire(autojump_clock: trio.testing.MockClock) -> None:
    closed = trio.Event()

    async def first(stream: trio.abc.Stream) -> None:
        await Server(stream).serve_forever()
        closed.set()

    async def second(stream: trio.abc.Stream) -> None:
        await Server(stream).serve_forever()

    async with upstream(first, second, pool=PoolLimits(idle_expiry=30)) as (client, network):
        await fetch(client)
        await trio.sleep(29)
        await fetch(client)  # still fresh: reused
        assert len(network.connects) == 1
        await trio.sleep(30)
        await fetch(client)
        assert len(network.connects) == 2
        assert closed.is_set()  # the expired one was closed, not leaked
        assert client.statistics() == stats(idle=1, active=0, opened=2, reused=1)


async def test_expired_connections_are_all_closed_even_inside_a_cancelled_scope(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ended = 0

    async def handler(stream: trio.abc.Stream) -> None:
        nonlocal ended
        await Server(stream).serve_forever()
        ended += 1

    async with upstream(handler, handler, pool=PoolLimits(idle_expiry=30)) as (client, _):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch, client)
            nursery.start_soon(fetch, client)
        assert client.statistics() == stats(idle=2, active=0, opened=2, reused=0)
        await trio.sleep(31)
        with trio.CancelScope() as scope:
            scope.cancel()
            await fetch(client)
        await trio.testing.wait_all_tasks_blocked()
        assert ended == 2  # both expired connections closed, not just the first
        assert client.statistics() == stats(idle=0, active=0, opened=2, reused=0)


async def test_idle_connections_are_capped_per_origin() -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        await Server(stream).serve_forever()

    async with upstream(handler, handler, handler, pool=PoolLimits(max_idle=1)) as (client, _):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(fetch, client)
        assert client.statistics() == stats(idle=1, active=0, opened=3, reused=0)


async def test_a_request_can_name_its_origins_own_pool_limits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Each upstream in proxy.ini has its own max_idle_connections / idle_expiry.
    async def handler(stream: trio.abc.Stream) -> None:
        await Server(stream).serve_forever()

    strict = PoolLimits(max_idle=2, idle_expiry=5.0)
    async with upstream(*[handler] * 5) as (client, _):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(partial(fetch, client, pool=strict))
        assert client.statistics() == stats(idle=2, active=0, opened=4, reused=0)
        await trio.sleep(6)  # past this origin's expiry, well within the client's own 60 s
        await fetch(client, pool=strict)
        assert client.statistics() == stats(idle=1, active=0, opened=5, reused=0)
        none_kept = PoolLimits(max_idle=0)
        await fetch(client, pool=none_kept)  # reuses the idle one, then closes it
        assert client.statistics() == stats(idle=0, active=0, opened=5, reused=1)


async def test_aclose_closes_idle_connections() -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        await Server(stream).serve_forever()  # returns only at EOF

    async with upstream(handler) as (client, _):
        await fetch(client)
        await client.aclose()
        assert client.statistics().idle == 0


# --- broken upstreams ------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
async def test_close_mid_body_is_an_error_not_a_clean_end(chunked: bool) -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        await server.receive_request()
        if chunked:
            await server.send_chunked_head()
        else:
            await server.send(h11.Response(status_code=200, headers=[("content-length", "100")]))
        await server.send(h11.Data(data=b"partial"))
        await stream.aclose()

    async with upstream(handler) as (client, _):
        pieces: list[bytes] = []
        with pytest.raises(UpstreamProtocolError, match=f"{ORIGIN}: invalid HTTP response"):
            await collect(client, pieces)
        assert pieces == [b"partial"]
        assert client.statistics() == stats(idle=0, active=0, opened=1, reused=0)


class ResettingStream(trio.abc.Stream):
    """A client stream whose next receive fails as a TCP reset would, once `reset` is set."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.reset = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        if self.reset:
            # What trio.SocketStream raises on ECONNRESET.
            raise trio.BrokenResourceError from ConnectionResetError(
                104, "Connection reset by peer"
            )
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_reset_mid_body_is_a_connection_error() -> None:
    async with trio.open_nursery() as nursery:
        client_half, server_half = trio.testing.memory_stream_pair()
        resetting = ResettingStream(client_half)

        async def connector(host: str, port: int, **kw: object) -> trio.abc.Stream:
            return resetting

        async def handler() -> None:
            server = Server(server_half)
            await server.receive_request()
            await server.send_chunked_head()
            await server.send(h11.Data(data=b"partial"))
            await trio.testing.wait_all_tasks_blocked()
            resetting.reset = True
            await server_half.send_all(b"5\r\nhello")  # wakes the client's receive
            await server.expect_eof()

        nursery.start_soon(handler)
        client = HTTPClient(connector=connector, environ={})
        with pytest.raises(UpstreamConnectionError, match="Connection reset by peer") as info:
            await collect(client, [])
        assert str(info.value).startswith(ORIGIN)
        await client.aclose()


async def test_garbage_status_line_is_a_protocol_error_without_quoting_it() -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        await Server(stream).receive_request()
        await stream.send_all(b"SSH-2.0-OpenSSH_9.6 sk-secret-123\r\n\r\n")
        await Server(stream).expect_eof()

    async with upstream(handler) as (client, _):
        with pytest.raises(UpstreamProtocolError, match="illegal status line") as info:
            await fetch(client)
    assert "sk-secret" not in str(info.value)
    assert "OpenSSH" not in str(info.value)


async def test_malformed_header_line_is_not_quoted_in_the_error() -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        await Server(stream).receive_request()
        await stream.send_all(b"HTTP/1.1 200 OK\r\nx-echo sk-secret-123\r\n\r\n")
        await Server(stream).expect_eof()

    async with upstream(handler) as (client, _):
        with pytest.raises(UpstreamProtocolError, match="illegal header line") as info:
            await fetch(client)
    assert "sk-secret" not in str(info.value)


async def test_oversized_response_head_is_a_protocol_error() -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        await Server(stream).receive_request()
        await stream.send_all(b"HTTP/1.1 200 OK\r\n")
        try:
            for i in range(100):
                await stream.send_all(f"x-filler-{i}: {'y' * 1000}\r\n".encode())
        except trio.BrokenResourceError:
            return  # the client gave up before the end, as it should

    async with upstream(handler) as (client, _):
        with pytest.raises(UpstreamProtocolError, match="Receive buffer too long"):
            await fetch(client)


async def test_header_value_that_cannot_be_sent_names_the_header_not_the_value() -> None:
    async with upstream() as (client, network):
        headers = [("x-api-key", "sk-secret-123\n")]
        with pytest.raises(ConfigError, match="'x-api-key'") as info:
            async with client.stream("POST", URL, headers=headers):
                pass
        assert "sk-secret" not in str(info.value)
        assert network.connects == []  # never reached the network


@pytest.mark.parametrize("url", ["ftp://api.example.com/x", "http:///x", "http://h:99999/x"])
async def test_bad_upstream_url_is_a_config_error(url: str) -> None:
    async with upstream() as (client, _):
        with pytest.raises(ConfigError, match="upstream URL"):
            await fetch(client, url)


# --- timeouts --------------------------------------------------------------------------------


async def test_connect_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async def connector(host: str, port: int, **kw: object) -> trio.abc.Stream:
        await trio.sleep_forever()
        raise AssertionError

    client = HTTPClient(connector=connector, environ={})
    with pytest.raises(UpstreamTimeout, match=f"{ORIGIN}: could not connect within the connect"):
        await fetch(client, timeouts=Timeouts(connect=5))
    assert trio.current_time() == pytest.approx(5)


async def test_first_byte_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async def silent(stream: trio.abc.Stream) -> None:
        await Server(stream).receive_request()
        await Server(stream).expect_eof()

    async with upstream(silent) as (client, _):
        with pytest.raises(UpstreamTimeout, match="no response head within the first byte timeout"):
            await fetch(client, timeouts=Timeouts(first_byte=7, read=100))
        assert trio.current_time() == pytest.approx(7)
        assert client.statistics() == stats(idle=0, active=0, opened=1, reused=0)


async def test_first_byte_timeout_defaults_to_read(autojump_clock: trio.testing.MockClock) -> None:
    async def silent(stream: trio.abc.Stream) -> None:
        await Server(stream).receive_request()
        await Server(stream).expect_eof()

    async with upstream(silent) as (client, _):
        with pytest.raises(UpstreamTimeout, match=r"first byte timeout \(9 s\)"):
            await fetch(client, timeouts=Timeouts(read=9))


async def test_read_timeout_is_about_silence_between_pieces(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        await server.receive_request()
        await server.send_chunked_head()
        for _ in range(5):  # 5 pieces 4 s apart: 20 s in all, more than the read timeout
            await trio.sleep(4)
            await server.send(h11.Data(data=b"."))
        await server.expect_eof()  # then silence

    async with upstream(slow) as (client, _):
        pieces: list[bytes] = []
        with pytest.raises(UpstreamTimeout, match=f"{ORIGIN}: no data within the read timeout"):
            await collect(client, pieces, timeouts=Timeouts(read=5))
        assert pieces == [b"."] * 5
        assert trio.current_time() == pytest.approx(25)


async def test_total_timeout_caps_a_stream_that_never_goes_silent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def dribbles(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        await server.receive_request()
        await server.send_chunked_head()
        try:
            while True:
                await trio.sleep(1)
                await server.send(h11.Data(data=b"."))
        except trio.BrokenResourceError:
            pass  # the client hung up

    async with upstream(dribbles) as (client, _):
        timeouts = Timeouts(read=5, total=3.5)
        with pytest.raises(UpstreamTimeout, match=r"did not finish within the total timeout \(3.5"):
            await collect(client, [], timeouts=timeouts)
        assert trio.current_time() == pytest.approx(3.5)


async def test_total_timeout_also_caps_the_wait_for_the_head(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def silent(stream: trio.abc.Stream) -> None:
        await Server(stream).receive_request()
        await Server(stream).expect_eof()

    async with upstream(silent) as (client, _):
        with pytest.raises(UpstreamTimeout, match="total timeout"):
            await fetch(client, timeouts=Timeouts(first_byte=60, total=2))
        assert trio.current_time() == pytest.approx(2)


# --- cancellation ----------------------------------------------------------------------------


async def test_cancel_mid_body_closes_the_connection_at_once() -> None:
    saw_eof = trio.Event()

    async def handler(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        await server.receive_request()
        await server.send_chunked_head()
        await server.send(h11.Data(data=b"first"))
        await server.expect_eof()
        saw_eof.set()

    async with upstream(handler) as (client, _):
        with trio.CancelScope() as scope:
            async with client.stream("POST", URL, headers=HEADERS) as resp:
                async for _ in resp.aiter_bytes():
                    scope.cancel()
        assert scope.cancelled_caught
        await trio.testing.wait_all_tasks_blocked()
        assert saw_eof.is_set()  # no waiting on a graceful close
        assert client.statistics() == stats(idle=0, active=0, opened=1, reused=0)


async def test_cancel_while_waiting_for_the_head_closes_the_connection() -> None:
    saw_eof = trio.Event()

    async def handler(stream: trio.abc.Stream) -> None:
        await Server(stream).receive_request()
        await Server(stream).expect_eof()
        saw_eof.set()

    async with upstream(handler) as (client, _):
        with trio.move_on_after(0.01):
            await fetch(client)
        await trio.testing.wait_all_tasks_blocked()
        assert saw_eof.is_set()
        assert client.statistics() == stats(idle=0, active=0, opened=1, reused=0)


async def test_leaving_a_half_read_body_closes_the_connection() -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        await server.receive_request()
        await server.send_chunked_head()
        await server.send(h11.Data(data=b"first"), h11.Data(data=b"second"))
        await server.expect_eof()

    async with upstream(handler) as (client, _):
        async with client.stream("POST", URL, headers=HEADERS) as resp:
            async for _ in resp.aiter_bytes():
                break
        assert client.statistics() == stats(idle=0, active=0, opened=1, reused=0)


async def test_an_exception_in_the_callers_block_closes_the_connection() -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        await server.receive_request()
        await server.respond()
        await server.expect_eof()

    async with upstream(handler) as (client, _):

        async def read_then_fail() -> None:
            async with client.stream("POST", URL, headers=HEADERS) as resp:
                await resp.aread()
                raise KeyError("caller's bug")

        with pytest.raises(KeyError):
            await read_then_fail()
        assert client.statistics() == stats(idle=0, active=0, opened=1, reused=0)


# --- proxies ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


async def test_https_through_connect_proxy_tunnels_tls_to_the_target(
    ca: trustme.CA, ca_file: str
) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("api.example.com").configure_cert(server_context)
    seen: dict[str, object] = {}

    async def proxy(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        connect, _ = await server.receive_request()
        seen["connect"] = connect
        await server.send(h11.Response(status_code=200, headers=[]))
        assert server.h11.our_state is h11.SWITCHED_PROTOCOL
        tls = trio.SSLStream(stream, server_context, server_side=True, https_compatible=True)
        inner = Server(tls)
        request, body = await inner.receive_request()
        seen["request"], seen["body"] = request, body
        await inner.respond(body=b"through the tunnel")
        inner.h11.start_next_cycle()
        await inner.serve_forever(body=b"again, same connection")

    async with upstream(proxy) as (client, network):
        url = "https://api.example.com/v1/messages"
        tls = TLSOptions(ca_file=ca_file)
        proxy_url = "http://us%40er:p%3Ass@proxy.internal:3128"
        assert await fetch(client, url, tls=tls, proxy=proxy_url) == (200, b"through the tunnel")
        assert await fetch(client, url, tls=tls, proxy=proxy_url) == (
            200,
            b"again, same connection",
        )
    # TCP to the proxy only: the client did TLS itself, inside the tunnel.
    assert network.connects == [("proxy.internal", 3128, False, None)]
    connect = seen["connect"]
    assert isinstance(connect, h11.Request)
    assert connect.method == b"CONNECT"
    assert connect.target == b"api.example.com:443"
    token = base64.b64encode(b"us@er:p:ss")
    assert (b"proxy-authorization", b"Basic " + token) in list(connect.headers)
    request = seen["request"]
    assert isinstance(request, h11.Request)
    assert request.target == b"/v1/messages"
    assert (b"host", b"api.example.com") in list(request.headers)
    assert b"proxy-authorization" not in dict(request.headers)  # the target never sees it


async def test_proxy_refusing_connect_is_a_connection_error_without_credentials() -> None:
    async def proxy(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        await server.receive_request()
        await server.respond(407, b"auth please")
        await server.expect_eof()

    async with upstream(proxy) as (client, _):
        with pytest.raises(UpstreamConnectionError, match="requires authentication") as info:
            await fetch(client, "https://api.example.com/x", proxy="http://u:hunter2@proxy:3128")
    assert "hunter2" not in str(info.value)
    assert "http://proxy:3128" in str(info.value)


async def test_http_through_proxy_uses_absolute_form() -> None:
    seen: list[h11.Request] = []

    async def proxy(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        seen.append((await server.receive_request())[0])
        await server.respond()
        await server.expect_eof()

    async with upstream(proxy) as (client, network):
        await fetch(client, "http://api.example.com:8080/v1/x?y=1", proxy="http://u:p@proxy:3128")
    assert network.connects == [("proxy", 3128, False, None)]
    assert seen[0].target == b"http://api.example.com:8080/v1/x?y=1"
    assert (b"host", b"api.example.com:8080") in list(seen[0].headers)
    assert (b"proxy-authorization", b"Basic " + base64.b64encode(b"u:p")) in list(seen[0].headers)


async def test_environment_proxy_is_used_unless_no_proxy_matches() -> None:
    async def proxy(stream: trio.abc.Stream) -> None:
        server = Server(stream)
        request, _ = await server.receive_request()
        assert request.target == b"http://api.example.com/v1/messages"
        await server.respond()
        await server.expect_eof()

    async def direct(stream: trio.abc.Stream) -> None:
        await Server(stream).serve_forever()

    environ = {"HTTP_PROXY": "proxy:3128", "NO_PROXY": "localhost,.internal"}
    async with upstream(proxy, direct, environ=environ) as (client, network):
        await fetch(client)
        await fetch(client, "http://svc.internal/v1/messages")
    assert [c[:2] for c in network.connects] == [("proxy", 3128), ("svc.internal", 80)]


async def test_unsupported_proxy_scheme_is_a_config_error() -> None:
    async with upstream() as (client, _):
        with pytest.raises(ConfigError, match="proxy URL"):
            await fetch(client, proxy="socks5://proxy:1080")


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "bypass"),
    [
        ("api.example.com", 443, "", False),
        ("api.example.com", 443, "*", True),
        ("api.example.com", 443, "example.com", True),
        ("api.example.com", 443, ".example.com", True),
        ("api.example.com", 443, "*.example.com", True),
        ("example.com", 443, ".example.com", True),
        ("badexample.com", 443, "example.com", False),
        ("api.example.com", 443, "other.org, Example.COM ", True),
        ("api.example.com", 443, "other.org example.com", True),
        ("api.example.com", 443, "example.com:443", True),
        ("api.example.com", 8443, "example.com:443", False),
        ("api.example.com.", 443, "example.com", True),
        ("10.1.2.3", 80, "10.0.0.0/8", True),
        ("11.1.2.3", 80, "10.0.0.0/8", False),
        ("127.0.0.1", 80, "127.0.0.1", True),
        ("::1", 80, "::1", True),
        ("::1", 8080, "[::1]:8080", True),
        ("::1", 8081, "[::1]:8080", False),
        ("api.example.com", 443, ",,", False),
        ("api.example.com", 443, ".", False),
    ],
)
def test_no_proxy_matching(host: str, port: int, no_proxy: str, bypass: bool) -> None:
    assert no_proxy_matches(host, port, no_proxy) is bypass


@pytest.mark.parametrize(
    ("scheme", "environ", "expected"),
    [
        ("https", {"HTTPS_PROXY": "http://p:1"}, "http://p:1"),
        ("https", {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://p:1"}, "http://lower:1"),
        ("https", {"HTTP_PROXY": "http://p:1"}, None),
        ("http", {"HTTP_PROXY": "http://p:1"}, "http://p:1"),
        ("http", {"HTTPS_PROXY": "http://p:1"}, None),
        ("https", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com"}, None),
        ("https", {"HTTPS_PROXY": "http://p:1", "no_proxy": "*"}, None),
        ("https", {"HTTPS_PROXY": ""}, None),
    ],
)
def test_select_proxy_reads_the_scheme_variable_and_no_proxy(
    scheme: str, environ: dict[str, str], expected: str | None
) -> None:
    assert select_proxy(scheme, "api.example.com", 443, environ) == expected
