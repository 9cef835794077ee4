"""The upstream HTTP/1.1 client: one request in, one streamed response out.

Stage: the IO edge between `proxy` (which builds the request and reads the body into the SSE
decoder) and the network. Depends on `trio.abc.Stream` through an injected `Connector`.

Theory of operation: `HTTPClient.stream()` returns an async context manager. Entering it
resolves the proxy (explicit, or from the environment captured at construction), takes an idle
connection from the pool or opens one (`connect.open_stream`), sends the request and waits for
the response head. The body is then read piece by piece through the `Response`. Leaving the
context returns the connection to the pool only if the exchange completed cleanly; a
cancelled, failed or half-read exchange closes it at once.

Invariants:
- Timeouts are enforced with a fresh `trio.move_on_at` around each wait (in `connection`),
  never a scope held across the caller's code; `Timeouts.total` caps every one of them.
- Every exception leaving this package is a `ProxyError`: trio / h11 / ssl failures go through
  `boundary.upstream_errors` (keyed by origin, never quoting header values), bad URLs and bad
  header values are `ConfigError`. Non-2xx statuses are not errors here: the caller reads them.
- A request is retried once, on a fresh connection, only when it went out on a pooled
  connection and failed before any response byte came back (see `_open`).
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import h11
import trio

from trioproxy._version import __version__
from trioproxy.errors import ConfigError, UpstreamProtocolError
from trioproxy.upstream.boundary import Limit, TimedOut, upstream_errors
from trioproxy.upstream.connect import (
    default_connector,
    host_literal,
    make_ssl_context,
    open_stream,
    parse_proxy_url,
    select_proxy,
)
from trioproxy.upstream.connection import HTTPConnection
from trioproxy.upstream.options import PoolLimits, PoolStatistics, Timeouts, TLSOptions
from trioproxy.upstream.pool import ConnectionPool

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Mapping, Sequence
    from contextlib import AbstractAsyncContextManager
    from types import TracebackType

    from trioproxy.upstream.connect import Connector, ProxyURL

__all__ = ["HTTPClient", "Response"]

logger = logging.getLogger("trioproxy.upstream")

USER_AGENT = f"trioproxy/{__version__}"
DEFAULT_READ_LIMIT = 16 << 20  # bytes; `Response.aread`'s default cap
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PROXY_ENVIRON = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY")
# Headers the client owns: framing must match the body it sends (RFC 9112 §6), hop-by-hop
# headers are per connection (RFC 9110 §7.6.1), and we only read identity-coded bodies.
_OWN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "accept-encoding",
    }
)
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.1 field-name
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # controls other than HTAB (§5.5)
_TARGET = re.compile(r"[\x21-\x7e]+")  # a request-target: visible ASCII, no spaces
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_DEFAULT_TIMEOUTS = Timeouts()
_DEFAULT_TLS = TLSOptions()
_DEFAULT_POOL = PoolLimits()


class HTTPClient:
    """An HTTP/1.1 client on h11 and trio, with a connection pool, TLS and CONNECT proxies.

    Args:
        connector: opens TCP (+TLS) streams; the default uses `trio.open_tcp_stream` and
            `trio.SSLStream`. Tests pass one returning `trio.testing.memory_stream_pair()`
            halves.
        pool: idle connections kept per (scheme, host, port, TLS, proxy), and for how long,
            unless a request names its own limits.
        environ: where `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` are read from (once, here);
            default `os.environ`.

    Example:
        >>> async def main(client: HTTPClient) -> None:  # doctest: +SKIP
        ...     async with client.stream("POST", url, headers=[], body=b"{}") as response:
        ...         async for piece in response.aiter_bytes():
        ...             print(response.status, piece)
    """

    def __init__(
        self,
        *,
        connector: Connector | None = None,
        pool: PoolLimits = _DEFAULT_POOL,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._connector: Connector = connector if connector is not None else default_connector
        self._pool: ConnectionPool[HTTPConnection] = ConnectionPool(pool)
        source = os.environ if environ is None else environ
        self._environ = {name: source[name] for name in _PROXY_ENVIRON if name in source}
        self._ssl_contexts: dict[TLSOptions, ssl.SSLContext] = {}  # building one costs ~ms
        self._warned_unverified: set[str] = set()
        self._closed = False

    def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Sequence[tuple[str, str]],
        body: bytes = b"",
        timeouts: Timeouts = _DEFAULT_TIMEOUTS,
        tls: TLSOptions = _DEFAULT_TLS,
        proxy: str | None = None,
        pool: PoolLimits | None = None,
    ) -> AbstractAsyncContextManager[Response]:
        """Send one request; the context manager yields the response once its head arrived.

        The client adds `host`, `content-length`, `accept-encoding: identity` and (unless
        given) `user-agent`; hop-by-hop and framing headers in `headers` are replaced.

        Args:
            method: e.g. "POST".
            url: `http://` or `https://` URL.
            headers: request headers (names in any case).
            body: the request body, sent whole.
            timeouts: see `Timeouts`.
            tls: certificate checks for https URLs.
            proxy: an `http://[user:pass@]host:port` proxy for this request; None uses
                `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` from the client's environment.
            pool: how many idle connections to keep for this origin, and how long; None uses
                the client's.

        Raises (on entering):
            UpstreamTimeout: connect or first-byte timeout (or total).
            UpstreamConnectionError: TCP, TLS (certificate checks included) or proxy failure.
            UpstreamProtocolError: the response head was not valid HTTP/1.1.
            ConfigError: a bad URL, proxy URL, `ca_file`, or a header value that can't be sent.
        """
        return _Exchange(
            self,
            _Call(method.upper(), url, tuple(headers), body, timeouts, tls, proxy, pool),
        )

    async def aclose(self) -> None:
        """Close every idle connection; connections in use close when their exchange ends."""
        self._closed = True
        for conn in self._pool.drain():
            await conn.aclose()

    def statistics(self) -> PoolStatistics:
        """A snapshot of the pool: idle, active, opened and reused connections."""
        return self._pool.statistics()

    # -- internals ---------------------------------------------------------------------------

    async def _open(self, call: _Call) -> Response:
        budget = _Budget(call.timeouts, trio.current_time())
        plan = self._plan(call)
        with upstream_errors(plan.origin):
            conn, reused = await self._acquire(plan, budget)
            try:
                head = await self._send(conn, plan, call, budget)
            except (trio.BrokenResourceError, OSError, h11.RemoteProtocolError):
                # Retrying a POST is safe only here. A server closes a kept-alive connection
                # when its own idle timeout fires, and we can't see that until we use it. If
                # the request went out on such a pooled connection and the write failed, or
                # the connection hit EOF / reset before a single response byte, the server
                # never processed the request, so one retry on a fresh connection is what
                # RFC 9112 §9.3.1 allows (httpcore and urllib3 do the same). A fresh
                # connection has no such excuse: its failures are reported.
                if not reused or conn.received_any:
                    raise
                logger.debug(
                    "%s: pooled connection was closed by the server; retrying", plan.origin
                )
                conn = await self._connect(plan, budget)
                head = await self._send(conn, plan, call, budget)
        return Response(conn, head, origin=plan.origin, budget=budget, key=plan.key, pool=call.pool)

    def _plan(self, call: _Call) -> _Plan:
        parts = _parse_url(call.url)
        scheme, host, port = parts
        proxy_text = call.proxy or select_proxy(scheme, host, port, self._environ)
        proxy = parse_proxy_url(proxy_text) if proxy_text else None
        origin = f"{scheme}://{host_literal(host)}:{port}"
        host_header = host_literal(host) + ("" if port == _DEFAULT_PORTS[scheme] else f":{port}")
        target = _request_target(call.url)
        if proxy is not None and scheme == "http":
            target = f"http://{host_header}{target}"  # absolute form (RFC 9112 §3.2.2)
        headers = _request_headers(call, host_header, proxy if scheme == "http" else None)
        tls = self._ssl_context(call.tls, origin) if scheme == "https" else None
        key = (scheme, host, port, call.tls if scheme == "https" else None, proxy_text)
        return _Plan(scheme, host, port, origin, target, headers, tls, proxy, key)

    def _ssl_context(self, options: TLSOptions, origin: str) -> ssl.SSLContext:
        if not options.verify and origin not in self._warned_unverified:
            self._warned_unverified.add(origin)
            logger.warning("%s: TLS certificate verification is turned off", origin)
        context = self._ssl_contexts.get(options)
        if context is None:
            context = self._ssl_contexts[options] = make_ssl_context(options)
        return context

    async def _acquire(self, plan: _Plan, budget: _Budget) -> tuple[HTTPConnection, bool]:
        conn, expired = self._pool.take(plan.key, trio.current_time())
        for old in expired:
            await old.aclose()
        if conn is not None:
            return conn, True
        return await self._connect(plan, budget), False

    async def _connect(self, plan: _Plan, budget: _Budget) -> HTTPConnection:
        limit = budget.limit("connect", budget.timeouts.connect)
        stream: trio.abc.Stream | None = None
        with trio.move_on_at(limit.at):
            stream = await open_stream(
                self._connector,
                scheme=plan.scheme,
                host=plan.host,
                port=plan.port,
                tls=plan.tls,
                proxy=plan.proxy,
                connect_timeout=limit.at - trio.current_time(),
            )
        if stream is None:
            raise TimedOut(limit)
        self._pool.opened()
        return HTTPConnection(stream)

    async def _send(
        self, conn: HTTPConnection, plan: _Plan, call: _Call, budget: _Budget
    ) -> h11.Response:
        timeouts = budget.timeouts
        first_byte = timeouts.first_byte if timeouts.first_byte is not None else timeouts.read
        limit = budget.limit("first byte", first_byte)  # one deadline for send + head
        try:
            await conn.send_request(call.method, plan.target, plan.headers, call.body, limit)
            return await conn.receive_head(limit)
        except BaseException:
            await self._discard(conn)
            raise

    async def _release(self, response: Response, *, clean: bool) -> None:
        conn = response._conn
        if conn.closed:
            return
        if clean and not self._closed and conn.finish_without_io():
            conn.start_next_cycle()
            now = trio.current_time()
            for old in self._pool.put(response._key, conn, now, response._pool_limits):
                await old.aclose()
        else:
            await self._discard(conn)

    async def _discard(self, conn: HTTPConnection) -> None:
        if not conn.closed:
            self._pool.release()  # before the await: the count must hold even if cancelled
            await conn.aclose()


class Response:
    """An upstream response whose head has arrived; the body is read on demand.

    Attributes:
        status: the status code (no exception for non-2xx: read the body for the error).
        reason: the reason phrase.
        headers: (name, value) pairs, names lower-case, both latin-1 decoded.
    """

    def __init__(
        self,
        conn: HTTPConnection,
        head: h11.Response,
        *,
        origin: str,
        budget: _Budget,
        key: object,
        pool: PoolLimits | None,
    ) -> None:
        self.status: int = head.status_code
        self.reason: str = head.reason.decode("latin-1")
        self.headers: tuple[tuple[str, str], ...] = tuple(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in head.headers
        )
        self._conn = conn
        self._origin = origin
        self._budget = budget
        self._key = key
        self._pool_limits = pool
        self._done = False

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body pieces as they arrive (never empty pieces).

        Each wait is bounded by the read timeout (and the total one).

        Raises:
            UpstreamTimeout, UpstreamConnectionError, UpstreamProtocolError: the body did not
                arrive whole; a connection closed before the framing says the body ends is an
                error, never a clean end (close-delimited bodies excepted, by definition).
        """
        return _BodyIterator(self)

    async def aread(self, limit: int = DEFAULT_READ_LIMIT) -> bytes:
        """The whole (rest of the) body.

        Raises:
            UpstreamProtocolError: the body is longer than `limit` bytes (or malformed).
            UpstreamTimeout, UpstreamConnectionError: as for `aiter_bytes`.
        """
        pieces: list[bytes] = []
        size = 0
        while (piece := await self._next_piece()) is not None:
            size += len(piece)
            if size > limit:
                raise UpstreamProtocolError(
                    f"{self._origin}: response body longer than {limit} bytes"
                )
            pieces.append(piece)
        return b"".join(pieces)

    async def _next_piece(self) -> bytes | None:
        if self._done:
            return None
        with upstream_errors(self._origin):
            piece = await self._conn.receive_piece(self._read_limit)
        if piece is None:
            self._done = True
        return piece

    def _read_limit(self) -> Limit:
        return self._budget.limit("read", self._budget.timeouts.read)


class _BodyIterator:
    # A plain async iterator, not an async generator: nothing to finalize if the caller stops
    # early, and no cancel scope can be held across a yield.
    def __init__(self, response: Response) -> None:
        self._response = response

    def __aiter__(self) -> _BodyIterator:
        return self

    async def __anext__(self) -> bytes:
        piece = await self._response._next_piece()
        if piece is None:
            raise StopAsyncIteration
        return piece


class _Exchange:
    """The context manager `HTTPClient.stream` returns."""

    def __init__(self, client: HTTPClient, call: _Call) -> None:
        self._client = client
        self._call = call
        self._response: Response | None = None

    async def __aenter__(self) -> Response:
        self._response = await self._client._open(self._call)
        return self._response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._response is not None:
            await self._client._release(self._response, clean=exc_type is None)


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    url: str = field(repr=False)  # the query may hold a key
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    body: bytes = field(repr=False)
    timeouts: Timeouts
    tls: TLSOptions
    proxy: str | None = field(repr=False)
    pool: PoolLimits | None


@dataclass(frozen=True, slots=True)
class _Plan:
    scheme: str
    host: str
    port: int
    origin: str
    target: str = field(repr=False)
    headers: list[tuple[bytes, bytes]] = field(repr=False)
    tls: ssl.SSLContext | None
    proxy: ProxyURL | None
    key: tuple[object, ...]


class _Budget:
    """Turns `Timeouts` into deadlines, each capped by the total one."""

    def __init__(self, timeouts: Timeouts, start: float) -> None:
        self.timeouts = timeouts
        total = timeouts.total
        self._total = Limit(start + total, "total", total) if total is not None else None

    def limit(self, which: str, seconds: float) -> Limit:
        at = trio.current_time() + seconds
        if self._total is not None and self._total.at <= at:
            return self._total
        return Limit(at, which, seconds)


def _parse_url(url: str) -> tuple[str, str, int]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1
    if scheme not in _DEFAULT_PORTS or not parts.hostname or port == -1:
        # The URL itself is not quoted: its query may carry a key.
        raise ConfigError(
            f"upstream URL must be http(s)://host[:port]/path (got scheme {scheme!r})"
        )
    return scheme, parts.hostname, port if port is not None else _DEFAULT_PORTS[scheme]


def _request_target(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not _TARGET.fullmatch(target):
        raise ConfigError("upstream URL path must be visible ASCII (percent-encode the rest)")
    return target


def _request_headers(
    call: _Call, host_header: str, proxy: ProxyURL | None
) -> list[tuple[bytes, bytes]]:
    out = [(b"host", host_header.encode("ascii"))]
    for name, value in call.headers:
        lower = name.lower()
        if lower in _OWN_HEADERS:
            continue
        try:
            raw_name, raw_value = lower.encode("ascii"), value.encode("latin-1")
        except UnicodeEncodeError:
            raw_name, raw_value = b"", b"\x00"
        if not _TOKEN.fullmatch(raw_name) or _BAD_VALUE.search(raw_value):
            # Name the header, never its value (it may be a key with a stray newline).
            raise ConfigError(
                f"request header {name!r} has a name or value that cannot be sent "
                "(control characters, a line break, or characters outside latin-1)"
            )
        out.append((raw_name, raw_value))
    if call.body or call.method in _METHODS_WITH_BODY:
        out.append((b"content-length", str(len(call.body)).encode("ascii")))
    out.append((b"accept-encoding", b"identity"))  # we relay bytes; we never decompress
    if not any(name == b"user-agent" for name, _ in out):
        out.append((b"user-agent", USER_AGENT.encode("ascii")))
    if proxy is not None and proxy.authorization is not None:
        out.append((b"proxy-authorization", proxy.authorization.encode("ascii")))
    return out
