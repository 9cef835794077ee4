"""The shared-store settings and the limiter's fallback, without Redis (issue 22).

`[proxy] store`, `store_timeout`, `store_prefix` parse strictly and never echo a password; the
limiter admits through a shared store when it answers, falls back to local limits (counted) when
it does not, and never lets a store failure reach the request; a missing extra is a clear error.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest

from tests.conftest import config_from
from trioproxy.config_types import ClientKey
from trioproxy.errors import ConfigError, RateLimited
from trioproxy.metrics import Metrics
from trioproxy.service import Runtime
from trioproxy.store import Limiter, StoreUnavailable, open_limiter, store_location
from trioproxy.upstream import HTTPClient

if TYPE_CHECKING:
    from trioproxy.config_types import ProxySettings


def _settings(lines: str, environ: dict[str, str] | None = None) -> ProxySettings:
    return config_from(f"[proxy]\n{lines}\n", environ).proxy


def test_store_defaults_to_memory() -> None:
    settings = _settings("")
    assert (settings.store, settings.store_timeout, settings.store_prefix) == (
        "memory",
        50.0,
        "trioproxy:",
    )


def test_store_url_takes_its_password_from_the_environment() -> None:
    settings = _settings(
        "store = redis://:${REDIS_PASSWORD}@redis.internal:6380/2\nstore_timeout = 20ms\n"
        "store_prefix = prod:",
        {"REDIS_PASSWORD": "s3cret-redis-password"},
    )
    assert settings.store == "redis://:s3cret-redis-password@redis.internal:6380/2"
    assert settings.store_timeout == 20.0
    assert settings.store_prefix == "prod:"
    assert "s3cret" not in repr(settings)
    assert store_location(settings.store) == "redis://redis.internal:6380/2"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("postgres://db/1", "must be memory or a redis:// or rediss:// URL"),
        ("localhost:6379", "without a scheme"),
        ("redis://", "names no host"),
        ("redis://host:99999/0", "bad port"),
        ("redis://host:6379/zero", "not a number"),
        ("redis://host:6379/0?ssl=true", "cannot carry ?options"),
    ],
)
def test_a_bad_store_is_refused_with_what_to_write(value: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        _settings(f"store = {value}")
    assert says in info.value.message
    assert "store" in info.value.message


def test_a_bad_store_url_message_never_shows_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        _settings("store = redis://:hunter2-hunter2@host:6379/x")
    assert "hunter2" not in info.value.message


@pytest.mark.parametrize("value", ["0", "0.5", "20000", "soon", "nan"])
def test_store_timeout_is_milliseconds_within_bounds(value: str) -> None:
    with pytest.raises(ConfigError, match="store_timeout must be milliseconds between 1 and"):
        _settings(f"store_timeout = {value}")


def test_store_prefix_must_be_printable() -> None:
    with pytest.raises(ConfigError, match="store_prefix must be printable"):
        _settings("store_prefix = has space")


def test_a_missing_redis_extra_is_a_clear_start_up_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "coredis", None)  # import coredis raises ImportError
    monkeypatch.delitem(sys.modules, "trioproxy.store.redis", raising=False)
    settings = _settings("store = redis://:pw-0123456789@127.0.0.1:6379/0")
    with pytest.raises(ConfigError) as info:
        open_limiter(settings, Metrics())
    message = info.value.message
    assert "pip install 'trioproxy[redis]'" in message
    assert "redis://127.0.0.1:6379/0" in message
    assert "pw-0123456789" not in message


class FakeShared:
    """A shared store that answers as told: admit, raise StoreUnavailable, or refuse."""

    backend = "fake"
    location = "fake://"

    def __init__(self) -> None:
        self.mode = "up"  # up | down | full
        self.degraded_flag = False
        self.admitted: list[str] = []
        self.released: list[str] = []

    @property
    def degraded(self) -> bool:
        return self.degraded_flag

    async def admit(self, key: ClientKey) -> str:
        if self.mode == "down":
            self.degraded_flag = True
            raise StoreUnavailable("down")
        if self.mode == "full":
            raise RateLimited("full", headers=(("retry-after", "1"),))
        lease = f"l{len(self.admitted)}"
        self.admitted.append(lease)
        return lease

    def release(self, key: ClientKey, lease: str) -> None:
        self.released.append(lease)

    async def open(self) -> bool:
        return True

    async def aclose(self) -> None:
        pass


KEY = ClientKey("team", "sk", max_concurrent=2, rpm=100)


async def test_the_shared_store_decides_and_the_local_limiter_counts() -> None:
    shared = FakeShared()
    limiter = Limiter(shared, Metrics())
    leases = [await limiter.admit(KEY, 0.0) for _ in range(3)]  # the store says yes 3 times
    assert all(lease.shared for lease in leases)
    assert limiter.in_flight(KEY) == 3
    for lease in leases:
        lease.release()
        lease.release()  # idempotent
    assert shared.released == ["l0", "l1", "l2"]
    assert limiter.in_flight(KEY) == 0
    shared.mode = "full"
    with pytest.raises(RateLimited):
        await limiter.admit(KEY, 0.0)  # the store's refusal stands
    assert limiter.status() == "ok"


async def test_an_unavailable_store_falls_back_to_local_limits_counting_what_runs() -> None:
    shared = FakeShared()
    metrics = Metrics()
    limiter = Limiter(shared, metrics)
    running = await limiter.admit(KEY, 0.0)  # admitted by the store, still running
    shared.mode = "down"
    fallback = await limiter.admit(KEY, 0.0)
    assert not fallback.shared
    assert limiter.status() == "degraded"
    # max_concurrent = 2 locally, and the request the store admitted counts.
    with pytest.raises(RateLimited):
        await limiter.admit(KEY, 0.0)
    running.release()
    fallback.release()
    assert shared.released == ["l0"]  # the local lease never goes to the store
    assert limiter.in_flight(KEY) == 0
    text = metrics.render()
    assert "trioproxy_store_fallbacks_total 2" in text


async def test_keys_without_limits_never_touch_the_store() -> None:
    shared = FakeShared()
    limiter = Limiter(shared, Metrics())
    lease = await limiter.admit(ClientKey("free", "sk"), 0.0)
    lease.release()
    assert shared.admitted == []


async def test_memory_store_is_the_local_limiter_and_health_says_ok() -> None:
    config = config_from(
        "[proxy]\n[key:team]\nkey = sk-team-0123456789abcdef\nmax_concurrent = 1\n"
        "[upstream:demo]\ntype = demo\n[model:demo]\nupstream = demo\n"
    )
    http = HTTPClient()
    runtime = Runtime(config, http)
    try:
        limiter = runtime.limiter
        assert limiter.backend == "memory"
        assert await limiter.open()
        key = config.proxy.keys[0]
        lease = await limiter.admit(key, 0.0)
        with pytest.raises(RateLimited):
            await limiter.admit(key, 0.0)
        lease.release()
        (await limiter.admit(key, 0.0)).release()
        health = runtime.service.health()
        assert (health["store"], health["store_backend"]) == ("ok", "memory")
        assert "trioproxy_store_degraded" not in runtime.service.render_metrics()
    finally:
        await http.aclose()


def test_store_metrics_render_as_prometheus_text() -> None:
    metrics = Metrics()
    metrics.set_store_degraded(True)
    metrics.store_failure("timeout")
    metrics.store_fallback()
    text = metrics.render()
    assert "# TYPE trioproxy_store_degraded gauge\ntrioproxy_store_degraded 1\n" in text
    assert 'trioproxy_store_failures_total{reason="timeout"} 1' in text
    assert "trioproxy_store_fallbacks_total 1" in text
