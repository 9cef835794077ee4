"""Where per-key limits live: this process (`store = memory`) or Redis (`store = redis://...`).

Stage: the IO edge, held by the `Runtime` (it outlives reloads, as the limits must). Admission in
the pump goes through `Limiter.admit`, which asks the shared store when there is one and this
process's own `KeyLimiter` when there is none, or while the store is unavailable.

With Redis, the upstream key pools' health (cool-downs, disabled keys, circuit breakers) is shared
too: `shared_health` gives the `Runtime` the `HealthStore` for its `KeyPools` (store/health.py).

The Redis client (coredis, the `redis` extra) is imported only when a Redis URL is configured
(trioproxy/store/redis.py); `store = memory` needs nothing beyond the standard library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioproxy.errors import ConfigError
from trioproxy.store.base import SharedLimits, StoreUnavailable, store_location
from trioproxy.store.limiter import Lease, Limiter

if TYPE_CHECKING:
    from trioproxy.config_types import ProxySettings
    from trioproxy.metrics import Metrics
    from trioproxy.routing.pool import HealthStore

__all__ = [
    "Lease",
    "Limiter",
    "SharedLimits",
    "StoreUnavailable",
    "open_limiter",
    "shared_health",
    "store_location",
]


def open_limiter(settings: ProxySettings, metrics: Metrics) -> Limiter:
    """The limiter for `settings.store`. Raises `ConfigError` when it names Redis and the
    `redis` extra (coredis) is not installed."""
    if settings.store == "memory":
        return Limiter(None, metrics)
    try:
        from trioproxy.store.redis import RedisStore
    except ImportError as exc:
        if exc.name not in ("coredis", "anyio"):
            raise
        raise ConfigError(
            f"[proxy] store = {store_location(settings.store)} needs the Redis client, which "
            "is not installed: pip install 'trioproxy[redis]' (it adds coredis); or set "
            "store = memory"
        ) from exc
    store = RedisStore(
        settings.store,
        prefix=settings.store_prefix,
        timeout=settings.store_timeout / 1000.0,
        metrics=metrics,
    )
    return Limiter(store, metrics)


def shared_health(limiter: Limiter) -> HealthStore | None:
    """The key pools' `HealthStore` shared through `limiter`'s store, or None (`store = memory`:
    `KeyPools` keeps its own `MemoryStore`)."""
    make = getattr(limiter.shared, "health_store", None)
    if make is None:
        return None
    store: HealthStore = make()
    return store
