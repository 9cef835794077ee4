"""`[proxy] server = hypercorn`: the ASGI app under hypercorn, for TLS and HTTP/2.

Stage: the outermost IO edge, the alternative to `native`. hypercorn through its public API only
(`hypercorn.trio.serve`, `hypercorn.config.Config`). We bind the listening sockets ourselves (our
backlog, SO_REUSEPORT for `--workers`) and hand them over as `fd://` binds, and run graceful
shutdown's drain and expiry beside hypercorn's own graceful timeout.

What hypercorn 0.18 does that we cannot change from outside (docs/operations.md says so): its
HTTP/1.1 writes are shielded without a deadline (a client that stops reading holds its task until
it reads or the kernel gives up); HTTP/2 cleartext (h2c) is accepted on plain TCP; WebSocket
pings run on hypercorn's own timer.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from trioproxy.servers.asgi import ASGIApp
from trioproxy.servers.native import (
    LISTEN_BACKLOG,
    SHUTDOWN_GRACE,
    bind_sockets,
    drain_and_expire,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from trioproxy.config_types import ProxySettings
    from trioproxy.service import Runtime

__all__ = ["hypercorn_config", "serve_hypercorn"]

logger = logging.getLogger("trioproxy")


def hypercorn_config(settings: ProxySettings, fds: list[int]) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [f"fd://{fd}" for fd in fds]
    if settings.certfile is not None:
        hc.certfile = settings.certfile
        hc.keyfile = settings.keyfile
    # HTTP/2 only when asked for (`http2 = true`): hypercorn 0.18 stops applying backpressure to
    # an HTTP/2 stream whose client holds its flow-control window at 0 (its StreamBuffer.pop(0)
    # releases the pause), so such a client can make it buffer a whole answer.
    hc.alpn_protocols = ["h2", "http/1.1"] if settings.http2 else ["http/1.1"]
    hc.graceful_timeout = settings.drain_timeout + SHUTDOWN_GRACE
    hc.errorlog = logging.getLogger("trioproxy.hypercorn")
    hc.accesslog = None
    hc.keep_alive_timeout = settings.keep_alive_timeout
    hc.h11_max_incomplete_size = settings.max_header_bytes
    hc.websocket_max_message_size = settings.ws_max_message_bytes
    hc.include_server_header = False
    hc.backlog = LISTEN_BACKLOG
    hc.websocket_ping_interval = settings.keepalive_interval  # real ping frames on /v1/ws
    return hc


async def serve_hypercorn(
    runtime: Runtime,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None,
    *,
    reuse_port: bool,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    """Serve the ASGI app with hypercorn until `shutdown_trigger` returns, then shut down as
    the native server does: drain for `drain_timeout`, end the rest with `server_shutdown`.

    hypercorn#225: a WebSocket upgrade with stray bytes after its head raises out of hypercorn's
    connection handler and ends its whole server task. No public setting prevents it, so the
    server task is restarted on the same listening sockets (we keep them open, and hand
    hypercorn a duplicate each time): the daemon keeps serving, though connections open at that
    moment are dropped. The native server has no such defect.
    """
    settings = runtime.service.config.proxy
    sockets = bind_sockets(settings, reuse_port=reuse_port)
    app = ASGIApp(runtime)
    stopping = trio.Event()
    try:
        async with trio.open_nursery() as nursery:

            async def trigger() -> None:
                if shutdown_trigger is None:
                    await trio.sleep_forever()
                await shutdown_trigger()
                stopping.set()
                nursery.start_soon(drain_and_expire, runtime, lambda: None)

            async def run(task_status: trio.TaskStatus[list[str]]) -> None:
                config = hypercorn_config(settings, [os.dup(sock.fileno()) for sock in sockets])
                await hypercorn_serve(
                    app,  # type: ignore[arg-type]  # plain ASGI 3; hypercorn's alias is stricter
                    config,
                    shutdown_trigger=trigger,
                    task_status=task_status,
                )

            status: trio.TaskStatus[list[str]] = task_status
            while True:
                try:
                    await run(status)
                    break
                except Exception as exc:  # hypercorn's server task died (see the docstring)
                    if stopping.is_set():
                        raise
                    logger.error(
                        "hypercorn's server task failed (%r); serving again on the same sockets",
                        exc,
                    )
                status = trio.TASK_STATUS_IGNORED
            nursery.cancel_scope.cancel()  # a drain still waiting: hypercorn is done already
    finally:
        for sock in sockets:
            sock.close()
