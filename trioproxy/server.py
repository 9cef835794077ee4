"""The server: hypercorn's HTTP/1.1 + WebSocket protocol on trio, run by our own accept loop.

Stage: the outermost IO edge. `serve(config)` binds, reports its URLs through `task_status`, serves
until its shutdown trigger fires (or its scope is cancelled), then shuts down gracefully.

Why our own loop instead of `hypercorn.trio.serve` (hypercorn is pinned to 0.18.0 for this):
- hypercorn#225: one malformed WebSocket upgrade (stray bytes after the headers) raises out of a
  connection handler into the shared handler nursery and takes the whole server down. Each
  connection here runs under `_GuardedTCPServer.run`, which contains the failure to that connection.
- hypercorn's `protocol_send` shields `send_all` with no deadline, so a client that stops reading
  pins its stream, and shutdown, forever. Ours gives every write `write_timeout` seconds; past that
  the connection is closed, the app sees `http.disconnect`, and the stream's pump cancels upstream.
- hypercorn leaves an idle keep-alive connection's timer running after the client closed it, and
  with it the handler and the socket, for `keep_alive_timeout`; ours stops it when reading ends.
- Graceful shutdown in our order: stop accepting, let requests in flight finish for
  `drain_timeout`, then end the rest with a `server_shutdown` error chunk (not a cut connection).
- No lifespan round-trip is needed: we own the app (a lifespan app that returns early crashes
  hypercorn's trio worker; `ProxyApp` answers lifespan properly for people who run hypercorn).
"""

from __future__ import annotations

import errno
import logging
import math
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, RawData
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import repr_socket_addr, wrap_app

from trioproxy.asgi import MAX_HEADER_BYTES, ProxyApp
from trioproxy.upstream import HTTPClient

if TYPE_CHECKING:
    import socket
    from collections.abc import Awaitable, Callable

    from hypercorn.events import Event
    from hypercorn.trio.task_group import TaskGroup

    from trioproxy.config_types import ProxyConfig

__all__ = ["serve"]

logger = logging.getLogger("trioproxy")

# Seconds that streams still get after `drain_timeout` to write their shutdown error chunk.
SHUTDOWN_GRACE = 2.0
# Connections the kernel queues before we accept them; Linux caps it at net.core.somaxconn
# (4096 since 5.4). hypercorn's default of 100 drops a burst of connects beyond it, and a client
# whose SYN is dropped retries only after 1 s (RFC 6298's initial RTO): bench/ saw those stalls.
LISTEN_BACKLOG = 4096
# Seconds an idle keep-alive connection is kept: longer than common load balancers' idle timeout
# (60 s), so that they, not we, close it (no request is ever sent on a connection we just closed).
KEEP_ALIVE_TIMEOUT = 75.0


class _KeepAliveTimer:
    """hypercorn's keep-alive timeout (the `idle_task` of its TCPServer), one task per connection.

    hypercorn calls `stop()` when a request starts and `restart()` when the connection is idle
    again. Its own timer does each under a lock and starts a fresh task (`nursery.start`) every
    time: a task and three scheduler round trips per request. Here one task per connection waits
    under a cancel scope whose deadline those calls move (a trio deadline may change while its
    scope waits), and does what hypercorn's would when it fires: close the idle connection after
    `keep_alive_timeout`, or at once when the server terminates.
    """

    def __init__(self, server: _GuardedTCPServer) -> None:
        self._server = server
        self._deadline = math.inf  # when the idle connection times out; inf while serving
        self._waiting: trio.CancelScope | None = None
        self._became_idle: trio.Event | None = None
        self._task: trio.CancelScope | None = None
        self._closed = False

    async def restart(self, task_group: TaskGroup, action: object) -> None:
        """The connection is idle from now (hypercorn passes its timeout handler; ours does that
        work, see `_watch`)."""
        self._move(trio.current_time() + self._server.config.keep_alive_timeout)
        if self._became_idle is not None:
            self._became_idle.set()
        if self._task is None and not self._closed:
            self._task = trio.CancelScope()
            task_group.spawn(self._watch, self._task)

    async def stop(self) -> None:
        """A request is being served: no timeout until `restart`."""
        self._move(math.inf)

    def close(self) -> None:
        """The connection is over: end the task."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()

    def _move(self, deadline: float) -> None:
        self._deadline = deadline
        if self._waiting is not None:
            self._waiting.deadline = deadline

    async def _watch(self, task: trio.CancelScope) -> None:
        terminated = self._server.context.terminated
        with task:
            while True:
                with trio.CancelScope(deadline=self._deadline) as self._waiting:
                    await terminated.wait()
                self._waiting = None
                if self._deadline != math.inf:
                    break  # idle: for keep_alive_timeout, or while the server terminates
                # Terminating while a request is served: hypercorn closes the connection once
                # the response is done; should it stay open, close it when it is idle.
                self._became_idle = trio.Event()
                await self._became_idle.wait()
                self._became_idle = None
            with trio.CancelScope(shield=True):
                await self._server._initiate_server_close()


class _GuardedTCPServer(TCPServer):
    """hypercorn's per-connection server with the guards described in the module docstring, a
    direct write path (see `protocol_send`) and a cheaper keep-alive timer (`_KeepAliveTimer`)."""

    write_timeout: float = 30.0
    # The stdlib socket under `self.stream` (the same object trio wraps), set by `_accept_loop`.
    raw_socket: socket.socket | None = None

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.keep_alive = _KeepAliveTimer(self)
        self.idle_task = self.keep_alive  # type: ignore[assignment]  # duck-typed stand-in

    async def run(self) -> None:
        try:
            await super().run()
        except Exception:  # the guard for hypercorn#225: one bad connection, not the daemon
            logger.warning("a client connection failed inside hypercorn; closed it", exc_info=True)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)

    async def _read_data(self) -> None:
        try:
            await super()._read_data()
        finally:
            # The client closed (or reading failed): the connection is over. hypercorn 0.18 leaves
            # its keep-alive timer running on an idle connection, and its handler, and so the
            # socket, until `keep_alive_timeout` (75 s here): a client opening a connection per
            # request would pile up descriptors at its request rate x 75.
            self.keep_alive.close()

    async def protocol_send(self, event: Event) -> None:
        if not isinstance(event, RawData):
            await super().protocol_send(event)
            return
        data = event.data
        if not data:  # h11 has nothing to write for some events (a sized body's end)
            return
        if self.raw_socket is not None and not self.send_lock.locked():
            # The direct path: one non-blocking send(2), no lock, cancel scope or scheduler
            # round trip. Every write of a stream chunk comes here, and the socket buffer
            # almost always has room. Only what the kernel does not take right away goes the
            # slow way, which is where the write deadline matters. Skipped while a slow write
            # holds the lock, so bytes never overtake each other.
            try:
                sent = self.raw_socket.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:  # reset, broken pipe, or closed already (fileno -1: EBADF)
                await self._close_broken()
                return
            if sent == len(data):
                return
            data = data[sent:]
        broken = False
        async with self.send_lock:
            try:
                # Shielded like hypercorn's own (a cancelled send_all leaves the stream in an
                # unknown state), but with a deadline: trio cancel scopes keep their own deadline
                # even when shielded from outer cancellation.
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + self.write_timeout
                    await self.stream.send_all(data)
                broken = scope.cancelled_caught
                if broken:
                    logger.info("client stopped reading for %.0fs; closing it", self.write_timeout)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                broken = True
        if broken:
            await self._close_broken()

    async def _close_broken(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self.stream)
            await self.protocol.handle(Closed())


# accept(2) errors that concern only the connection being accepted: skip it (as trio does).
_ACCEPT_SKIP = frozenset({errno.ECONNABORTED, errno.EPERM, errno.EPROTO})
# accept(2) errors that mean the process is out of descriptors or memory: pause, then go on
# (as trio.serve_listeners does), rather than spinning or dying.
_ACCEPT_CAPACITY = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
ACCEPT_PAUSE = 0.1  # seconds


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
    try:
        while True:
            try:
                conn, _ = listening.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(listening)
                continue
            except OSError as exc:
                if exc.errno in _ACCEPT_CAPACITY:
                    logger.error("cannot accept connections (%s); pausing accept", exc.strerror)
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


def hypercorn_config(config: ProxyConfig, *, reuse_port: bool = False) -> HypercornConfig:
    settings = config.proxy
    hc = HypercornConfig()
    host = settings.listen_host
    hc.bind = [
        f"[{host}]:{settings.listen_port}" if ":" in host else f"{host}:{settings.listen_port}"
    ]
    hc.graceful_timeout = settings.drain_timeout + SHUTDOWN_GRACE
    hc.errorlog = logging.getLogger("trioproxy.hypercorn")
    hc.accesslog = None
    hc.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    hc.h11_max_incomplete_size = MAX_HEADER_BYTES  # a head trickled in slowly (see asgi)
    hc.websocket_max_message_size = settings.ws_max_message_bytes
    hc.include_server_header = False
    hc.backlog = LISTEN_BACKLOG
    # hypercorn sets SO_REUSEPORT on the listening socket when it is told of several workers:
    # that is how `trioproxy --workers N` processes share one port (the kernel spreads accepts).
    hc.workers = 2 if reuse_port else 1
    hc.websocket_ping_interval = settings.keepalive_interval  # real ping frames on /v1/ws
    return hc


async def serve(
    config: ProxyConfig,
    *,
    app: ProxyApp | None = None,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve trioproxy until `shutdown_trigger` returns or the caller's scope is cancelled.

    Args:
        config: the parsed configuration (see `load_config`).
        app: an existing app to serve (e.g. one whose config is reloaded); made from `config`
            otherwise, with its own upstream HTTP client that is closed when serving ends.
        shutdown_trigger: awaited; when it returns, shut down gracefully (stop accepting, drain for
            `drain_timeout`, then end remaining streams with a `server_shutdown` error).
        reuse_port: bind with SO_REUSEPORT, so several processes can serve one port.
        task_status: `nursery.start` receives the bound URLs, e.g. `["http://127.0.0.1:8003"]`.

    Example:
        urls = await nursery.start(trioproxy.serve, config)
    """
    hc = hypercorn_config(config, reuse_port=reuse_port)
    owned_http = None
    if app is None:
        owned_http = HTTPClient()
        app = ProxyApp(config, owned_http)
    try:
        await _serve(app, config, hc, shutdown_trigger, task_status)
    finally:
        if owned_http is not None:
            with trio.CancelScope(shield=True):
                await owned_http.aclose()


async def _serve(
    app: ProxyApp,
    config: ProxyConfig,
    hc: HypercornConfig,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    sockets = hc.create_sockets()
    urls = []
    for sock in sockets.insecure_sockets:
        sock.listen(hc.backlog)
        urls.append("http://" + repr_socket_addr(sock.family, sock.getsockname()))
    context = WorkerContext(None)
    server_class = type(
        "TCPServer", (_GuardedTCPServer,), {"write_timeout": config.proxy.write_timeout}
    )
    # ProxyApp is a plain ASGI 3 callable; hypercorn's TypedDict-based alias is stricter than ASGI.
    asgi_app = wrap_app(app, hc.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]

    async def handle(stream: trio.SocketStream, raw: socket.socket) -> None:
        server = server_class(asgi_app, hc, context, ConnectionState({}), stream)
        server.raw_socket = raw
        try:
            await server.run()
        finally:
            # hypercorn's own close awaits send_eof first, which raises at once in a cancelled
            # scope and skips the close; trio.serve_listeners closes here too, for that reason.
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as accepting:
            for sock in sockets.insecure_sockets:
                accepting.start_soon(_accept_loop, sock, handle, connections)
            for url in urls:
                logger.info("trioproxy listening on %s", url)
            task_status.started(urls)
            if shutdown_trigger is None:
                await trio.sleep_forever()
            await shutdown_trigger()
            accepting.cancel_scope.cancel()  # stop accepting; close the listening sockets
        drain = app.config.proxy.drain_timeout
        logger.info("shutting down: draining open requests for up to %.0fs", drain)
        app.shutdown.drain()
        await context.terminated.set()  # idle keep-alive connections close now
        with trio.move_on_after(drain):
            await app.wait_idle()
        app.shutdown.expire()  # what is still running ends with a server_shutdown error
        connections.cancel_scope.deadline = trio.current_time() + SHUTDOWN_GRACE
    logger.info("trioproxy stopped")
