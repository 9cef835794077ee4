"""The upstream HTTP/1.1 client: h11 over trio, with TLS, a connection pool and CONNECT proxies.

Stage: the IO edge between `proxy` and the network (DESIGN.md "The data flow"). The modules:
`client` (HTTPClient, Response: the request lifecycle), `connection` (one h11 connection),
`pool` (idle-connection bookkeeping), `connect` (TCP / TLS / CONNECT, proxy selection),
`boundary` (the one place trio / h11 / ssl exceptions become `Upstream*` errors), `options`.
"""

from __future__ import annotations

from trioproxy.upstream.client import HTTPClient, Response
from trioproxy.upstream.connect import Connector, no_proxy_matches, select_proxy
from trioproxy.upstream.options import PoolLimits, PoolStatistics, Timeouts, TLSOptions

__all__ = [
    "Connector",
    "HTTPClient",
    "PoolLimits",
    "PoolStatistics",
    "Response",
    "TLSOptions",
    "Timeouts",
    "no_proxy_matches",
    "select_proxy",
]
