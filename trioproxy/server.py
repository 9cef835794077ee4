"""`serve(config)`: run trioproxy's server until told to stop.

Stage: the outermost IO edge, the entry the CLI and embedders call. It picks the server named by
`[proxy] server` (`native`, our HTTP/1.1 on h11, or `hypercorn` for TLS and HTTP/2), gives it a
`Runtime` (made here with its own upstream HTTP client, unless one is passed in) and reports the
bound URLs through `task_status`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from trioproxy.service import Runtime
from trioproxy.upstream import HTTPClient

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from trioproxy.config_types import ProxyConfig

__all__ = ["serve"]


async def serve(
    config: ProxyConfig,
    *,
    runtime: Runtime | None = None,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve trioproxy until `shutdown_trigger` returns or the caller's scope is cancelled.

    Args:
        config: the parsed configuration (see `load_config`).
        runtime: an existing runtime to serve (e.g. one whose config is reloaded, or shared with
            an in-process face); made from `config` otherwise, with its own upstream HTTP client
            that is closed when serving ends.
        shutdown_trigger: awaited; when it returns, shut down gracefully (stop accepting, drain
            for `drain_timeout`, then end remaining streams with a `server_shutdown` error).
        reuse_port: bind with SO_REUSEPORT, so several processes can serve one port.
        task_status: `nursery.start` receives the bound URLs, e.g. `["http://127.0.0.1:8003"]`.

    Example:
        urls = await nursery.start(trioproxy.serve, config)
    """
    owned_http = None
    if runtime is None:
        owned_http = HTTPClient()
        runtime = Runtime(config, owned_http)
    try:
        # A shared store (`store = redis://...`) connects before the first request, so that
        # the first requests need not fall back to this instance's own limits.
        await runtime.limiter.open()
        if config.proxy.server == "hypercorn":
            from trioproxy.servers.hypercorn_server import serve_hypercorn

            await serve_hypercorn(
                runtime, shutdown_trigger, reuse_port=reuse_port, task_status=task_status
            )
        else:
            from trioproxy.servers.native import serve_native

            await serve_native(
                runtime, shutdown_trigger, reuse_port=reuse_port, task_status=task_status
            )
    finally:
        if owned_http is not None:
            with trio.CancelScope(shield=True):
                await runtime.limiter.aclose()
                await owned_http.aclose()
