"""Admission against per-key limits, shared through a store when there is one.

Stage: the IO edge, called by the pump before a request runs (`admit`) and when it ends
(`Lease.release`, with the tokens the request used). Theory of operation:

- No shared store (`store = memory`), or a key with no limits: this process's `KeyLimiter` decides.
- A shared store that is up: it decides, in one round trip bounded by `store_timeout`; the local
  limiter only counts the request as in flight here (`KeyLimiter.track`).
- The store times out or fails: the request is admitted (or refused) by the local limiter at once,
  counted as a fallback in /metrics, and the store marks itself degraded; until its background
  probe sees it answer again, later requests skip it entirely, so none waits on a dead store.
  Local limits are then per instance: a key limited to N may get N on each instance meanwhile.

A request never fails because of the store: `StoreUnavailable` stops here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from trioproxy.limits import KeyLimiter
from trioproxy.store.base import StoreUnavailable

if TYPE_CHECKING:
    from trioproxy.config_types import ClientKey
    from trioproxy.metrics import Metrics
    from trioproxy.store.base import SharedLimits

__all__ = ["Lease", "Limiter"]


class Lease:
    """One admitted request's hold on its key's limits; `release()` once, when it ends."""

    __slots__ = ("_limiter", "_released", "_shared", "key")

    def __init__(self, limiter: Limiter, key: ClientKey, shared: str | None) -> None:
        self._limiter = limiter
        self.key = key
        self._shared = shared  # the store's lease id; None when the local limiter admitted it
        self._released = False

    @property
    def shared(self) -> bool:
        """Whether the shared store admitted this request (rather than the local limiter)."""
        return self._shared is not None

    def release(self, tokens: int = 0) -> None:
        """Give the request's concurrency slot back and take the `tokens` it used from the
        key's token-rate bucket (`tpm`). Idempotent; never blocks."""
        if self._released:
            return
        self._released = True
        local = self._limiter.local
        local.release(self.key)
        store = self._limiter.shared
        if self._shared and store is not None:
            store.release(self.key, self._shared)
        if tokens > 0 and self.key.tpm is not None:
            # Both buckets, however the request was admitted: the shared one counts what every
            # instance used (this request's tokens were spent even if the store was down when
            # it started), the local one what this instance used, for a fallback.
            local.debit(self.key, tokens, trio.current_time())
            if store is not None:
                store.debit(self.key, tokens)


class Limiter:
    """Per-key admission for one process, through `shared` when given.

    Args:
        shared: the store every instance shares, or None for this process's limits only.
        metrics: where fallbacks are counted.
    """

    def __init__(self, shared: SharedLimits | None, metrics: Metrics) -> None:
        self.shared = shared
        self.local = KeyLimiter()
        self._metrics = metrics

    @property
    def backend(self) -> str:
        return "memory" if self.shared is None else self.shared.backend

    def status(self) -> str:
        """`"ok"`, or `"degraded"` while the shared store is unavailable (local limits apply)."""
        return "degraded" if self.shared is not None and self.shared.degraded else "ok"

    async def admit(self, key: ClientKey, now: float) -> Lease:
        """Admit one request for `key` or raise `RateLimited`. `now` is trio's clock, for the
        local limiter. Waits at most `store_timeout` for the store."""
        store = self.shared
        limited = key.rpm is not None or key.max_concurrent is not None or key.tpm is not None
        if store is not None and limited:
            if not store.degraded:
                try:
                    lease = await store.admit(key)
                except StoreUnavailable:
                    pass
                else:
                    self.local.track(key)
                    return Lease(self, key, lease)
            self._metrics.store_fallback()
        self.local.acquire(key, now)
        return Lease(self, key, None)

    async def open(self) -> bool:
        """Connect to the shared store now, so the first requests need not fall back while it
        connects (bounded: a store that is down is reported degraded). True without a store."""
        return True if self.shared is None else await self.shared.open()

    async def aclose(self) -> None:
        if self.shared is not None:
            await self.shared.aclose()

    # The synchronous pair of the local limiter, for callers not yet moved to `admit` (they
    # count against this instance only).

    def acquire(self, key: ClientKey, now: float) -> None:
        self.local.acquire(key, now)

    def release(self, key: ClientKey) -> None:
        self.local.release(key)

    def in_flight(self, key: ClientKey) -> int:
        """Requests of `key` running on this instance, however they were admitted."""
        return self.local.in_flight(key)
