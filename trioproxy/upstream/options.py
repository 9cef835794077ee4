"""Options and statistics of the upstream HTTP client: plain frozen values, no IO.

Stage: passed in by `proxy` (built from the `[upstream:NAME]` config) to `HTTPClient.stream`.
Invariants: every value is immutable and hashable, so `TLSOptions` can key the connection pool.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PoolStatistics", "TLSOptions", "Timeouts"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long one upstream exchange may take, in seconds.

    Attributes:
        connect: to open TCP, plus TLS, plus the CONNECT tunnel when going through a proxy.
        first_byte: from starting to send the request to having the whole response head;
            None uses `read` (a model that thinks before answering needs a generous value).
        read: the longest silence between two pieces of the response body.
        total: the whole exchange, from `stream()` to the end of the body; None: no limit.
    """

    connect: float = 10.0
    first_byte: float | None = None
    read: float = 600.0
    total: float | None = None


@dataclass(frozen=True, slots=True)
class TLSOptions:
    """How to check the upstream's certificate.

    Attributes:
        verify: check the chain and the host name (turning it off logs a warning per origin).
        ca_file: a PEM bundle to trust instead of the system store.
    """

    verify: bool = True
    ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """How many idle connections to keep for one origin, and for how long.

    Attributes:
        max_idle: idle connections kept per (scheme, host, port, TLS, proxy); beyond it the
            oldest is closed. 0 keeps none (a new connection per request).
        idle_expiry: seconds an idle connection may wait before it is closed instead of reused.
    """

    max_idle: int = 100
    idle_expiry: float = 60.0


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A snapshot of `HTTPClient`'s connection pool.

    Attributes:
        idle: connections kept open and waiting for a request.
        active: connections carrying a request right now.
        opened: connections opened since the client was made.
        reused: requests sent on a connection taken from the pool.
    """

    idle: int
    active: int
    opened: int
    reused: int
