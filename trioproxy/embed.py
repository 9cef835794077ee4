"""Embedding: run trioproxy inside a Trio application.

Stage: the entry for embedders. `open_proxy(config)` serves HTTP (unless told not to) in a
nursery it owns and gives a `Proxy` (the in-process face, `faces.inprocess`) on the same runtime:
one set of limits, metrics and shutdown for both.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import TYPE_CHECKING

import trio

from trioproxy.faces.inprocess import Proxy
from trioproxy.server import serve
from trioproxy.service import Runtime
from trioproxy.upstream import HTTPClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from trioproxy.config_types import ProxyConfig

__all__ = ["open_proxy"]


@contextlib.asynccontextmanager
async def open_proxy(config: ProxyConfig, *, serve_http: bool = True) -> AsyncIterator[Proxy]:
    """Run trioproxy for the duration of an `async with` block.

    Args:
        config: from `load_config`. `listen = 127.0.0.1:0` picks a free port (see `Proxy.url`).
        serve_http: also serve HTTP (and WebSocket) at `Proxy.url`; False for in-process use only.

    Example:
        async with trioproxy.open_proxy(config) as proxy:
            hello = [{"role": "user", "content": "hi"}]
            body = await proxy.complete({"model": "demo", "messages": hello})
    """
    http = HTTPClient()
    runtime = Runtime(config, http)
    try:
        async with trio.open_nursery() as nursery:
            urls: list[str] = []
            if serve_http:
                urls = await nursery.start(partial(serve, config, runtime=runtime))
            yield Proxy(runtime, urls, nursery)
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await runtime.limiter.aclose()
            await http.aclose()
