"""trioproxy: an LLM API proxy daemon on Trio.

Clients speak the OpenAI Chat Completions API; trioproxy checks their proxy key, routes the model
to an upstream (Anthropic Messages, OpenAI Responses, any OpenAI-compatible chat API, or the
built-in `demo`), translates the request and streams the answer back, chunk by chunk.

Embedding (see docs/embedding.md):

    config = trioproxy.load_config("proxy.ini")
    async with trioproxy.open_proxy(config) as proxy:
        async for chunk in proxy.chat({"model": "demo", "messages": [...]}):
            ...
    # or: urls = await nursery.start(trioproxy.serve, config)
    # or mount trioproxy.asgi_app(config) in any trio-mode ASGI server
"""

from __future__ import annotations

from trioproxy._version import __version__
from trioproxy.config import load_config, parse_config
from trioproxy.config_types import (
    ClientKey,
    ModelConfig,
    ProxyConfig,
    ProxySettings,
    UpstreamConfig,
)
from trioproxy.embed import open_proxy
from trioproxy.errors import (
    AuthError,
    ClientError,
    ConfigError,
    PermissionDenied,
    ProxyError,
    RateLimited,
    RequestTooLarge,
    ServerShutdown,
    UnknownModel,
    UntranslatableRequest,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from trioproxy.faces.inprocess import Proxy, ProxyStatistics
from trioproxy.server import serve
from trioproxy.servers.asgi import ASGIApp, asgi_app
from trioproxy.service import Runtime

__all__ = [
    "ASGIApp",
    "AuthError",
    "ClientError",
    "ClientKey",
    "ConfigError",
    "ModelConfig",
    "PermissionDenied",
    "Proxy",
    "ProxyConfig",
    "ProxyError",
    "ProxySettings",
    "ProxyStatistics",
    "RateLimited",
    "RequestTooLarge",
    "Runtime",
    "ServerShutdown",
    "UnknownModel",
    "UntranslatableRequest",
    "UpstreamConfig",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "__version__",
    "asgi_app",
    "load_config",
    "open_proxy",
    "parse_config",
    "serve",
]
