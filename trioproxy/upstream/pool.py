"""The connection pool's bookkeeping: which idle connections may be reused, which must close.

Stage: the IO edge's memory, used by `client.HTTPClient`. The pool itself does no IO and reads
no clock (the caller passes `now`): it hands back the connections to close, and the caller
closes them.

Invariants:
- Idle connections are kept per key (scheme, host, port, TLS options, proxy), at most
  `max_idle` of them; the one returned last is reused first (it is the least likely to have
  been closed by the server), and the oldest is evicted first.
- A connection idle for `idle_expiry` seconds or longer is never handed out again.
- Both limits are per key: the pool's own, or those the last `put` for that key gave (each
  upstream in proxy.ini has its own).
- `active` counts connections between `opened()` / a successful `take()` and `release()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from trioproxy.upstream.options import PoolLimits, PoolStatistics

if TYPE_CHECKING:
    from collections.abc import Hashable

__all__ = ["ConnectionPool"]


class _Idle(Protocol):
    idle_since: float


C = TypeVar("C", bound=_Idle)


class ConnectionPool(Generic[C]):
    """Idle connections by key, with counters for `statistics()`."""

    def __init__(self, limits: PoolLimits) -> None:
        self._default = limits
        self._limits: dict[Hashable, PoolLimits] = {}  # keys whose puts named their own
        self._idle: dict[Hashable, list[C]] = {}  # oldest first
        self._active = 0
        self._opened = 0
        self._reused = 0

    def take(self, key: Hashable, now: float) -> tuple[C | None, list[C]]:
        """An idle connection for `key` (or None), and the expired ones the caller must close."""
        expired = self._sweep(now)
        found = self._idle.get(key)
        if not found:
            return None, expired
        conn = found.pop()
        if not found:
            del self._idle[key]
        self._active += 1
        self._reused += 1
        return conn, expired

    def opened(self) -> None:
        """A new connection was opened (and is active)."""
        self._opened += 1
        self._active += 1

    def release(self) -> None:
        """An active connection was closed (not returned to the pool)."""
        self._active -= 1

    def put(self, key: Hashable, conn: C, now: float, limits: PoolLimits | None = None) -> list[C]:
        """Return an active connection to the pool, under `limits` for its key (None: the
        pool's own); returns the ones the caller must close."""
        self._active -= 1
        if limits is not None and limits != self._default:
            self._limits[key] = limits
        else:
            self._limits.pop(key, None)
        to_close = self._sweep(now)
        conn.idle_since = now
        idle = self._idle.setdefault(key, [])
        idle.append(conn)
        while len(idle) > self._limits.get(key, self._default).max_idle:
            to_close.append(idle.pop(0))
        if not idle:
            del self._idle[key]
        return to_close

    def drain(self) -> list[C]:
        """Forget every idle connection; the caller closes them."""
        out = [conn for idle in self._idle.values() for conn in idle]
        self._idle.clear()
        return out

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            idle=sum(len(idle) for idle in self._idle.values()),
            active=self._active,
            opened=self._opened,
            reused=self._reused,
        )

    def _sweep(self, now: float) -> list[C]:
        expired: list[C] = []
        for key in list(self._idle):
            idle = self._idle[key]
            expiry = self._limits.get(key, self._default).idle_expiry
            keep = [conn for conn in idle if now - conn.idle_since < expiry]
            if len(keep) != len(idle):
                expired += [conn for conn in idle if now - conn.idle_since >= expiry]
                if keep:
                    self._idle[key] = keep
                else:
                    del self._idle[key]
        return expired
