"""The default server: our own HTTP/1.1 on h11 over trio, with WebSocket upgrades handed on.

Stage: the outermost IO edge (DESIGN.md "The edge"). Our accept loop, one task per connection,
h11 for parsing and framing. A request goes straight to the HTTP face (`faces.http`) with an
`Exchange` over this connection: no ASGI dicts, no channels, no task per request. An upgrade on
`/v1/ws` is handed, with the bytes already read, to trio-websocket's server side and the
WebSocket face.

Theory of operation, one connection:
  IDLE (no byte of the next request yet): the keep-alive timeout runs, except before the first
      request, where `head_timeout` does; draining closes the connection at once.
  HEAD (some bytes): the whole head must arrive within `head_timeout` (slowloris), and fit in
      `max_header_bytes` (431). HTTP/1.0 and 1.1 only (505: no h2c here, see docs/operations.md).
      `Content-Length` with `Transfer-Encoding` is refused with 400 and a close (RFC 9112 §6.1).
  BODY: read by the face only after the key and the declared size were accepted, which is when
      `Expect: 100-continue` is answered (RFC 9110 §10.1.1); `body_timeout` of silence at most.
  RESPONSE: written as the pump produces it; each write has `write_timeout`, after which the
      client counts as gone and its request is cancelled. Meanwhile a watcher reads the socket:
      EOF cancels the request; bytes are a pipelined next request, kept for h11 (bounded).
  Then keep-alive (`start_next_cycle`) when both sides allow it, else close: our FIN first
      (send_eof), then a short lingering read so that the client's unread bytes cannot turn our
      close into a reset that destroys the end of the response (RFC 9112 §9.6).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import h11
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream

from trioproxy import framing
from trioproxy.errors import ClientError, RequestTooLarge
from trioproxy.faces import http as http_face
from trioproxy.faces import websocket as ws_face

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from trio_websocket import WebSocketRequest

    from trioproxy.config_types import ProxySettings
    from trioproxy.service import Runtime

__all__ = ["bind_sockets", "serve_native"]

logger = logging.getLogger("trioproxy")

# Connections the kernel queues before we accept them; Linux caps it at net.core.somaxconn
# (4096 since 5.4). A connect dropped by a full queue is retried only after 1 s (RFC 6298).
LISTEN_BACKLOG = 4096
RECEIVE_SIZE = 65536  # bytes per read
# Bytes of a pipelined next request held while the current answer is written; past this we
# stop reading until the answer is done (the client waits, nothing is lost).
PIPELINE_BUFFER = 65536
LINGER = 2.0  # seconds of lingering read after our FIN, at most
# Seconds that streams still get after `drain_timeout` to write their shutdown error chunk and
# close; with the process' own exit this keeps within DESIGN.md's `drain_timeout` + 2 s.
SHUTDOWN_GRACE = 1.0
ACCEPT_PAUSE = 0.1  # seconds accept pauses when the process is out of descriptors
ACCEPT_LOG_INTERVAL = 10.0  # seconds between two log lines about failing accepts
# accept(2) errors that concern only the connection being accepted: skip it (as trio does).
_ACCEPT_SKIP = frozenset({errno.ECONNABORTED, errno.EPERM, errno.EPROTO})
# accept(2) errors that mean the process is out of descriptors or memory: pause, then go on.
_ACCEPT_CAPACITY = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


# Codes of the errors this server answers by itself, before a request reaches the HTTP face.
_REFUSAL_CODES = {
    400: "malformed_request",
    408: "request_timeout",
    431: "request_headers_too_large",
    505: "http_version_not_supported",
}


class _Timeout(ClientError):
    status_hint = 408  # RFC 9110 §15.5.9
    code_hint = "request_timeout"


class _Connection:
    """One client connection: the loop of request cycles described in the module docstring."""

    __slots__ = (
        "_slow_write",
        "broken",
        "client_closed",
        "conn",
        "raw",
        "requests",
        "server",
        "settings",
        "stream",
        "watching",
    )

    def __init__(
        self, server: _Server, stream: trio.SocketStream, raw: socket.socket | None
    ) -> None:
        self.server = server
        self.settings = server.runtime.service.config.proxy
        self.stream = stream
        self.raw = raw  # the stdlib socket under `stream`, for the direct write path
        self.conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.settings.max_header_bytes
        )
        self.broken = False  # a write failed or timed out: the byte stream is unusable
        self._slow_write = trio.Lock()  # held while a write waits for room in the socket
        self.client_closed = False  # we read EOF from the client
        self.requests = 0
        # The disconnect watcher of the request being answered; a failed write cancels it, so
        # the face sees the client as gone and cancels the request.
        self.watching: trio.CancelScope | None = None

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        handed_off = False
        try:
            while not self.broken and not self.client_closed:
                request = await self._read_head()
                if request is None:
                    break
                self.requests += 1
                if _is_websocket_upgrade(request) and _path(request) == ws_face.PATH:
                    handed_off = True
                    await self._upgrade(request)
                    return
                exchange = _Exchange(self, request)
                await http_face.serve_request(self.server.runtime, exchange)
                if not self._next_cycle():
                    break
        finally:
            if not handed_off:
                await self._close()

    def _next_cycle(self) -> bool:
        conn = self.conn
        if self.broken or self.client_closed or self.server.lifecycle.draining.is_set():
            return False
        if conn.our_state is not h11.DONE:
            return False  # MUST_CLOSE, or an answer cut short
        try:
            # The end of a request the face had no body to read for (a GET) is already here;
            # a body the face left unread (an error answered first) is not: close then.
            while conn.their_state is h11.SEND_BODY:
                if conn.next_event() is h11.NEED_DATA:
                    return False
        except h11.RemoteProtocolError:
            return False
        if conn.their_state is not h11.DONE:
            return False
        conn.start_next_cycle()
        return True

    async def _read_head(self) -> h11.Request | None:
        conn = self.conn
        has_bytes = bool(conn.trailing_data[0])
        settings = self.settings
        wait = (
            settings.head_timeout
            if self.requests == 0 or has_bytes
            else settings.keep_alive_timeout
        )
        with trio.move_on_after(wait) as deadline:
            idle = None if has_bytes else self.server.idle_scope(deadline)
            try:
                while True:
                    try:
                        event = conn.next_event()
                    except h11.RemoteProtocolError as exc:
                        await self._refuse(exc.error_status_hint, f"malformed request: {exc}")
                        return None
                    if event is h11.NEED_DATA:
                        data = await self._receive()
                        if data and not has_bytes:
                            has_bytes = True
                            deadline.deadline = trio.current_time() + settings.head_timeout
                            if idle is not None:
                                self.server.busy(idle)
                                idle = None
                        conn.receive_data(data)
                        continue
                    if isinstance(event, h11.Request):
                        return await self._check_head(event)
                    return None  # ConnectionClosed: the client closed between requests
            finally:
                if idle is not None:
                    self.server.busy(idle)
        if has_bytes and not self.client_closed:
            await self._refuse(408, f"the request head took longer than {wait:g}s (head_timeout)")
        return None

    async def _check_head(self, request: h11.Request) -> h11.Request | None:
        if request.http_version not in (b"1.0", b"1.1"):
            # `PRI * HTTP/2.0` (h2c prior knowledge) lands here: HTTP/2 is the hypercorn server's.
            await self._refuse(
                505, "this server speaks HTTP/1.1; for HTTP/2 use server = hypercorn"
            )
            return None
        names = {name for name, _ in request.headers}
        if b"transfer-encoding" in names and b"content-length" in names:
            await self._refuse(
                400, "a request must not have both Content-Length and Transfer-Encoding"
            )
            return None
        return request

    async def _refuse(self, status: int, message: str) -> None:
        """Answer a request we cannot read with `status` and close the connection."""
        body = framing.json_bytes(
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": _REFUSAL_CODES.get(status),
                }
            }
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
        ]
        try:
            head = h11.Response(status_code=status, headers=headers, reason=_reason(status))
            data = self.conn.send(head)
            data = (data or b"") + (self.conn.send(h11.Data(data=body)) or b"")
            data += self.conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:  # h11 is past the point of answering (e.g. mid-response)
            return
        await self.send_raw(data)

    # -- bytes in and out ------------------------------------------------------------------------

    async def _receive(self) -> bytes:
        try:
            data = await self.stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.client_closed = True
        return data

    async def send_raw(self, data: bytes) -> None:
        """Write `data` within `write_timeout`; on failure mark the connection broken."""
        if self.broken or not data:
            return
        raw = self.raw
        if raw is not None and not self._slow_write.locked():
            # The direct path: one non-blocking send(2), no scheduler round trip. The kernel
            # nearly always takes the whole piece; only what it does not take goes the slow way,
            # which is where the write deadline matters. Skipped while a slow write waits, so
            # bytes never overtake each other.
            try:
                sent = raw.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:  # reset, broken pipe
                self._break()
                return
            if sent == len(data):
                return
            data = data[sent:]
        done = False
        try:
            async with self._slow_write:
                if self.broken:
                    return
                with trio.move_on_after(self.settings.write_timeout):
                    await self.stream.send_all(data)
                    done = True
            if not done:
                logger.info(
                    "a client stopped reading for %.0fs (write_timeout); closing it",
                    self.settings.write_timeout,
                )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client is gone: `finally` breaks the stream, which cancels its request
        finally:
            if not done:  # cancelled, timed out or broken half-way: the stream is unusable
                self._break()

    def _break(self) -> None:
        self.broken = True
        if self.watching is not None:
            self.watching.cancel()

    async def _close(self) -> None:
        stream = self.stream
        try:
            if not self.broken and not self.client_closed:
                with trio.move_on_after(LINGER):
                    await stream.send_eof()
                    while await stream.receive_some(RECEIVE_SIZE):
                        pass  # read and drop until the client's FIN (a lingering close)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client reset or left first: nothing more to linger for
        finally:  # also when cancelled: the descriptor is closed whatever happens
            await trio.aclose_forcefully(stream)

    # -- WebSocket -------------------------------------------------------------------------------

    async def _upgrade(self, request: h11.Request) -> None:
        conn = self.conn
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            event = None
        if not isinstance(event, h11.EndOfMessage) or conn.next_event() is not h11.PAUSED:
            await self._refuse(400, "a WebSocket upgrade request must not have a body")
            await self._close()
            return
        replay = _head_bytes(request) + conn.trailing_data[0]
        stream = _Replay(self.stream, replay)
        settings = self.settings
        try:
            async with trio.open_nursery() as nursery:
                handshake: WebSocketRequest | None = None
                with trio.move_on_after(settings.head_timeout):
                    handshake = await wrap_server_stream(
                        nursery, stream, max_message_size=settings.ws_max_message_bytes
                    )
                if handshake is not None:
                    socket_ = _TrioHandshake(handshake, list(request.headers), stream)
                    try:
                        await ws_face.serve_socket(self.server.runtime, socket_)
                    finally:
                        if socket_.socket is not None:
                            with trio.move_on_after(1):
                                await socket_.socket.aclose(1000, "")
                nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)


class _Exchange:
    """One request/response on a `_Connection`, as the HTTP face sees it."""

    __slots__ = ("_conn", "_connection", "headers", "method", "path")

    def __init__(self, connection: _Connection, request: h11.Request) -> None:
        self._connection = connection
        self._conn = connection.conn
        self.method = request.method.decode("ascii", "replace")
        self.path = _path(request)
        self.headers: list[tuple[bytes, bytes]] = list(request.headers)

    async def read_body(self, limit: int) -> bytes:
        conn, connection = self._conn, self._connection
        for name, value in self.headers:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise RequestTooLarge(
                    f"request body is larger than {limit} bytes (max_body_bytes)", param=None
                )
        if conn.they_are_waiting_for_100_continue:
            await connection.send_raw(
                conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
            )
        body = bytearray()
        timeout = connection.settings.body_timeout
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise ClientError(f"malformed request body: {exc}") from exc
            if event is h11.NEED_DATA:
                with trio.move_on_after(timeout) as waited:
                    data = await connection._receive()
                if waited.cancelled_caught:
                    raise _Timeout(f"the request body stalled for {timeout:g}s (body_timeout)")
                if not data:
                    raise http_face.ClientGone
                conn.receive_data(data)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > limit:
                    raise RequestTooLarge(
                        f"request body is larger than {limit} bytes (max_body_bytes)", param=None
                    )
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:  # pragma: no cover - h11 yields nothing else inside a body
                raise http_face.ClientGone

    def _head(self, status: int, headers: list[tuple[bytes, bytes]]) -> h11.Response:
        if self._connection.server.lifecycle.draining.is_set():
            headers = [*headers, (b"connection", b"close")]
        return h11.Response(status_code=status, headers=headers, reason=_reason(status))

    async def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        conn = self._conn
        data = conn.send(self._head(status, headers)) or b""
        if body:
            data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await self._connection.send_raw(data)

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await self._connection.send_raw(self._conn.send(self._head(status, headers)) or b"")

    async def send(self, data: bytes) -> None:
        if not self._connection.broken:
            await self._connection.send_raw(self._conn.send(h11.Data(data=data)) or b"")

    async def end(self) -> None:
        if not self._connection.broken:
            await self._connection.send_raw(self._conn.send(h11.EndOfMessage()) or b"")

    async def wait_disconnect(self) -> None:
        connection = self._connection
        with trio.CancelScope() as connection.watching:
            try:
                while not connection.broken:
                    if len(self._conn.trailing_data[0]) > PIPELINE_BUFFER:
                        await trio.sleep_forever()  # until the answer is done or fails
                    data = await connection._receive()
                    if not data:
                        return
                    self._conn.receive_data(data)  # a pipelined request: h11 keeps it
            finally:
                connection.watching = None


class _Server:
    """The connections of one native server, and which of them are idle (closed at once when
    draining starts)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.lifecycle = runtime.lifecycle
        self._idle: set[trio.CancelScope] = set()

    def idle_scope(self, scope: trio.CancelScope) -> trio.CancelScope:
        if self.lifecycle.draining.is_set():
            scope.cancel()
        self._idle.add(scope)
        return scope

    def busy(self, scope: trio.CancelScope) -> None:
        self._idle.discard(scope)

    def drain(self) -> None:
        for scope in list(self._idle):
            scope.cancel()

    async def handle(self, stream: trio.SocketStream, raw: socket.socket | None) -> None:
        with self.runtime.connection():
            await _Connection(self, stream, raw).run()


# --- WebSocket hand-off -------------------------------------------------------------------------


class _Replay(trio.abc.Stream):
    """A stream that first gives back bytes already read from it (the upgrade request's head and
    whatever followed it), so that trio-websocket sees the connection from its first byte.

    It also makes sure a WebSocket ends with a close frame: when a client breaks the protocol
    (an unmasked frame, invalid UTF-8), wsproto reports a close with 1002 / 1007 (RFC 6455
    §7.4.1) but trio-websocket 0.12 closes the TCP connection without sending that frame, so the
    client would see a bare EOF. If no close frame went out when trio-websocket closes us, we
    send it (server frames are unmasked: RFC 6455 §5.1).
    """

    def __init__(self, stream: trio.SocketStream, replay: bytes) -> None:
        self._stream = stream
        self._replay = replay
        self.ws: WebSocketConnection | None = None  # set once the handshake is accepted
        self._close_sent = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._replay:
            await trio.lowlevel.checkpoint()
            size = len(self._replay) if max_bytes is None else max_bytes
            data, self._replay = self._replay[:size], self._replay[size:]
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if bytes(data[:1]) == b"\x88":  # FIN + opcode 8: trio-websocket sends a close frame
            self._close_sent = True
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        reason = None if self.ws is None else self.ws.closed
        if reason is not None and not self._close_sent and reason.code in _SENDABLE_CLOSE:
            self._close_sent = True
            payload = reason.code.to_bytes(2, "big") + (reason.reason or "").encode()[:123]
            with trio.move_on_after(1), contextlib.suppress(trio.BrokenResourceError):
                await self._stream.send_all(bytes([0x88, len(payload)]) + payload)
        await self._stream.aclose()


# Close codes a server may put in a close frame (RFC 6455 §7.4.1): not 1005 / 1006, which only
# report that no frame came.
_SENDABLE_CLOSE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011})


class _TrioHandshake:
    """trio-websocket's pending request, as the WebSocket face's `Handshake`."""

    def __init__(
        self, request: WebSocketRequest, headers: list[tuple[bytes, bytes]], stream: _Replay
    ) -> None:
        self._request = request
        self._stream = stream
        self.headers = headers
        self.subprotocols = list(request.proposed_subprotocols)
        self.socket: _TrioSocket | None = None

    async def accept(self, subprotocol: str | None) -> _TrioSocket:
        ws = await self._request.accept(subprotocol=subprotocol)
        self._stream.ws = ws
        self.socket = _TrioSocket(ws)
        return self.socket


class _TrioSocket:
    """trio-websocket's connection, as the WebSocket face's `MessageSocket`."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws

    async def get_message(self) -> str | bytes:
        try:
            return await self._ws.get_message()
        except ConnectionClosed as exc:
            raise ws_face.SocketClosed from exc

    async def send_message(self, message: str) -> None:
        try:
            await self._ws.send_message(message)
        except ConnectionClosed as exc:
            raise ws_face.SocketClosed from exc

    async def ping(self) -> None:
        try:
            await self._ws.ping()
        except ConnectionClosed as exc:
            raise ws_face.SocketClosed from exc

    async def aclose(self, code: int, reason: str) -> None:
        await self._ws.aclose(code, reason or None)


def _is_websocket_upgrade(request: h11.Request) -> bool:
    upgrade = connection = b""
    for name, value in request.headers:
        if name == b"upgrade":
            upgrade = value.lower()
        elif name == b"connection":
            connection = value.lower()
    return (
        request.method == b"GET"
        and upgrade == b"websocket"
        and b"upgrade" in (token.strip() for token in connection.split(b","))
    )


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _path(request: h11.Request) -> str:
    return unquote(request.target.partition(b"?")[0].decode("latin-1"))


def _head_bytes(request: h11.Request) -> bytes:
    lines = [b"%s %s HTTP/%s" % (request.method, request.target, request.http_version)]
    lines += [name + b": " + value for name, value in request.headers.raw_items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


# --- listening and accepting --------------------------------------------------------------------


def bind_sockets(settings: ProxySettings, *, reuse_port: bool) -> list[socket.socket]:
    """The listening sockets for `listen` (one address), with our backlog; SO_REUSEPORT lets
    `--workers N` processes share one port (the kernel spreads the accepts)."""
    host, port = settings.listen_host, settings.listen_port
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, type_, proto, _, address = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return [sock]


def socket_url(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def _accept_loop(
    listening: socket.socket,
    handle: Callable[[trio.SocketStream, socket.socket], Awaitable[None]],
    nursery: trio.Nursery,
) -> None:
    """Accept connections on `listening` until cancelled; each runs `handle(stream, raw)` in
    `nursery`. Closes `listening` when it ends.

    Our loop rather than `trio.SocketListener`, which keeps the accepted stdlib socket to itself:
    the connection's direct write path needs it. `trio.socket.from_stdlib_socket` wraps that very
    object (no dup), so trio and the direct path share one descriptor and one close.
    """
    listening.setblocking(False)
    failed, logged_at = 0, -ACCEPT_LOG_INTERVAL
    try:
        while True:
            try:
                conn, _ = listening.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(listening)
                continue
            except OSError as exc:
                if exc.errno in _ACCEPT_CAPACITY:
                    # Keep serving what we have; say so once per interval, not once per accept.
                    failed += 1
                    if trio.current_time() - logged_at >= ACCEPT_LOG_INTERVAL:
                        logger.error(
                            "cannot accept connections (%s; %d failed accepts); pausing accept",
                            exc.strerror,
                            failed,
                        )
                        logged_at, failed = trio.current_time(), 0
                    await trio.sleep(ACCEPT_PAUSE)
                    continue
                if exc.errno not in _ACCEPT_SKIP:
                    raise
            else:
                stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
                nursery.start_soon(handle, stream, conn)
            await trio.lowlevel.checkpoint()  # a flood of connections must not starve the rest
    finally:
        trio.lowlevel.notify_closing(listening)
        listening.close()


async def serve_native(
    runtime: Runtime,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None,
    *,
    reuse_port: bool,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    """Serve HTTP/1.1 and WebSocket until `shutdown_trigger` returns, then shut down gracefully:
    stop accepting, close idle connections, let requests run for `drain_timeout`, end the rest
    with a `server_shutdown` error, and give them `SHUTDOWN_GRACE` seconds to say so."""
    settings = runtime.service.config.proxy
    sockets = bind_sockets(settings, reuse_port=reuse_port)
    urls = [socket_url(sock) for sock in sockets]
    server = _Server(runtime)
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as accepting:
            for sock in sockets:
                accepting.start_soon(_accept_loop, sock, server.handle, connections)
            for url in urls:
                logger.info("trioproxy listening on %s", url)
            task_status.started(urls)
            if shutdown_trigger is None:
                await trio.sleep_forever()
            await shutdown_trigger()
            accepting.cancel_scope.cancel()  # stop accepting; close the listening sockets
        await drain_and_expire(runtime, server.drain)
        connections.cancel_scope.deadline = trio.current_time() + SHUTDOWN_GRACE
    logger.info("trioproxy stopped")


async def drain_and_expire(runtime: Runtime, close_idle: Callable[[], None]) -> None:
    """The two steps of graceful shutdown (see `service.Lifecycle`)."""
    drain = runtime.service.config.proxy.drain_timeout
    lifecycle = runtime.lifecycle
    logger.info("shutting down: draining open requests for up to %.0fs", drain)
    lifecycle.drain()
    close_idle()
    with trio.move_on_after(drain):
        await lifecycle.wait_idle()
    lifecycle.expire()  # what is still running ends with a server_shutdown error
