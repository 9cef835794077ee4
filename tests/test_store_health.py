"""Upstream key health and circuit breakers shared through Redis (issue 22, after issue 21's pools):
a key one instance saw rate-limited or refused is skipped by every instance, an open breaker is
seen by all, and a Redis that is down leaves each instance its own health. Against a real
`redis-server` started per test (tests/redis_server.py), as tests/test_store_redis.py does.
"""

from __future__ import annotations

import json
import math
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio

from tests import test_store_redis
from tests.conftest import config_from
from tests.lifecycle_support import (
    Response,
    chat_body,
    chat_request,
    exchange,
    http_get,
    parse_responses,
    poll_until,
)
from tests.test_keypool import ENV, A, B, KeyedUpstream, answer, ini, rate_limited, refused
from trioproxy.config_types import key_fingerprint
from trioproxy.metrics import Metrics
from trioproxy.routing.health import Breaker, BreakerState, KeyHealth, KeyState
from trioproxy.server import serve
from trioproxy.service import Runtime

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.redis_server import RedisServer
    from trioproxy.store.health import SharedHealth
    from trioproxy.store.redis import RedisStore
    from trioproxy.upstream import HTTPClient

# The Redis tests' skip condition and fixtures: a redis-server per test, an HTTP client.
pytestmark = test_store_redis.pytestmark
redis_server = test_store_redis.redis_server
http = test_store_redis.http

CLOSE = "Connection: close\r\n"
HASH = "t22:upstream-health"

# Stores and runtimes a test opened: closed when it ends (a store left open keeps its Redis
# connections, whose objects warn when collected in whatever test runs next).
_STORES: list[RedisStore] = []
_RUNTIMES: list[Runtime] = []


@pytest.fixture(autouse=True)
async def _close_stores() -> AsyncIterator[None]:
    yield
    while _STORES:
        await _STORES.pop().aclose()
    while _RUNTIMES:
        await _RUNTIMES.pop().limiter.aclose()


def _store(redis_server: RedisServer) -> tuple[RedisStore, SharedHealth]:
    from trioproxy.store.redis import RedisStore

    store = RedisStore(redis_server.url, prefix="t22:", timeout=0.5, metrics=Metrics())
    _STORES.append(store)
    return store, store.health_store()


def _fields(redis_server: RedisServer) -> int:
    return redis_server.integer("HLEN", HASH)


# --- two stores on one Redis, the HealthStore interface -------------------------------------------


async def test_a_cool_down_set_on_one_instance_is_seen_by_the_other(
    redis_server: RedisServer,
) -> None:
    one, first = _store(redis_server)
    two, second = _store(redis_server)
    assert await one.open() and await two.open()
    now = trio.current_time()
    first.set_key("up0", "aaaa", KeyHealth(until=now + 30, reason="rate_limited", strikes=1))
    started = trio.current_time()
    assert await poll_until(lambda: second.key("up0", "aaaa").state(now) is KeyState.COOLING, 2)
    took = trio.current_time() - started
    seen = second.key("up0", "aaaa")
    # Redis's clock in between: the remaining time survives the trip within a few ms.
    assert 29.5 <= seen.remaining(trio.current_time()) <= 30.0
    assert (seen.reason, seen.strikes) == ("rate_limited", 1)
    assert second.key("up0", "bbbb") == KeyHealth()
    assert took < 0.5  # a refresh every 0.1 s; a change is sent at once
    assert redis_server.integer("HEXISTS", HASH, json.dumps(["k", "up0", "aaaa"])) == 1


async def test_the_latest_until_wins_and_a_stale_copy_never_shortens_a_cool_down(
    redis_server: RedisServer,
) -> None:
    one, first = _store(redis_server)
    two, second = _store(redis_server)
    assert await one.open() and await two.open()
    now = trio.current_time()
    first.set_key("up0", "aaaa", KeyHealth(until=now + 60, reason="rate_limited", strikes=1))
    # The other instance, not having read it yet, cools the same key for less long.
    second.set_key("up0", "aaaa", KeyHealth(until=now + 5, reason="rate_limited", strikes=1))
    assert await poll_until(lambda: second.key("up0", "aaaa").remaining(now) > 50, 2)
    assert await poll_until(lambda: first.key("up0", "aaaa").remaining(now) > 50, 2)
    # A longer one replaces it everywhere, a quota cool-down here.
    second.set_key("up0", "aaaa", KeyHealth(until=now + 3600, reason="quota", strikes=0))
    assert await poll_until(lambda: first.key("up0", "aaaa").reason == "quota", 2)
    # A success (strikes back to 0) does not lift a cool-down someone else set.
    first.set_key("up0", "aaaa", KeyHealth(until=now + 3600, reason="quota", strikes=0))
    await trio.sleep(0.3)
    assert second.key("up0", "aaaa").remaining(now) > 3000


async def test_a_disabled_key_is_shared_and_a_reload_anywhere_re_enables_it(
    redis_server: RedisServer,
) -> None:
    one, first = _store(redis_server)
    two, second = _store(redis_server)
    assert await one.open() and await two.open()
    first.set_key("up0", "aaaa", KeyHealth(until=math.inf, reason="auth"))
    first.set_key("up0", "bbbb", KeyHealth(until=trio.current_time() + 30, reason="rate_limited"))
    assert await poll_until(lambda: second.key("up0", "aaaa").until == math.inf, 2)
    assert await poll_until(lambda: second.key("up0", "bbbb").until > 0, 2)
    # A reload of the second instance: the disabled key is tried again, by both; the cool-down
    # of the other key stands.
    second.retain({("up0", "aaaa"), ("up0", "bbbb")}, {"up0"})
    assert second.key("up0", "aaaa") == KeyHealth()
    assert await poll_until(lambda: first.key("up0", "aaaa") == KeyHealth(), 2)
    assert redis_server.integer("HEXISTS", HASH, json.dumps(["k", "up0", "aaaa"])) == 0
    await trio.sleep(0.3)
    assert second.key("up0", "aaaa") == KeyHealth()  # not brought back by a later read
    assert first.key("up0", "bbbb").state(trio.current_time()) is KeyState.COOLING


async def test_an_open_breaker_is_shared_and_a_success_closes_it_for_all(
    redis_server: RedisServer,
) -> None:
    one, first = _store(redis_server)
    two, second = _store(redis_server)
    assert await one.open() and await two.open()
    now = trio.current_time()
    second.set_breaker("up0", Breaker(BreakerState.CLOSED, 2, 0.0))  # two failures seen there
    first.set_breaker("up0", Breaker(BreakerState.OPEN, 5, now + 30))
    assert await poll_until(lambda: second.breaker("up0").state is BreakerState.OPEN, 2)
    assert 29 <= second.breaker("up0").until - now <= 30.1
    # A failure count from a stale copy does not close it.
    second.set_breaker("up0", Breaker(BreakerState.CLOSED, 3, 0.0))
    await trio.sleep(0.3)
    assert second.breaker("up0").state is BreakerState.OPEN
    assert first.breaker("up0").state is BreakerState.OPEN
    # A probe that succeeded (failures back to 0) closes it for every instance.
    first.set_breaker("up0", Breaker())
    assert await poll_until(lambda: second.breaker("up0") == Breaker(), 2)
    assert redis_server.integer("HEXISTS", HASH, json.dumps(["b", "up0", ""])) == 0


async def test_a_redis_restarted_empty_gets_this_instances_health_back(
    redis_server: RedisServer,
) -> None:
    one, first = _store(redis_server)
    assert await one.open()
    first.set_key("up0", "aaaa", KeyHealth(until=trio.current_time() + 30, reason="rate_limited"))
    assert await poll_until(lambda: _fields(redis_server) == 2, 2)  # the entry and `version`
    redis_server.stop()
    assert await poll_until(lambda: one.degraded, 3)
    # Learned while Redis is down: kept here, sent when it is back.
    first.set_breaker("up0", Breaker(BreakerState.OPEN, 5, trio.current_time() + 30))
    assert first.key("up0", "aaaa").reason == "rate_limited"
    redis_server.start()
    assert await poll_until(lambda: not one.degraded and _fields(redis_server) == 3, 5)
    two, second = _store(redis_server)
    assert await two.open()
    assert await poll_until(lambda: second.breaker("up0").state is BreakerState.OPEN, 2)
    assert second.key("up0", "aaaa").reason == "rate_limited"


# --- two serving instances, a fake upstream that answers per key ----------------------------------


class _Instance:
    def __init__(self, runtime: Runtime, url: str) -> None:
        self.runtime = runtime
        self.port = int(url.rsplit(":", 1)[1])

    async def chat(self) -> Response:
        body = chat_body(model="claude", stream=False)
        got = await exchange(self.port, chat_request(body, key=None, extra=CLOSE), 10)
        responses = parse_responses(got.data, eof=got.closed)
        assert responses, got
        return responses[0]

    async def keys(self) -> dict[str, str]:
        health: dict[str, Any] = json.loads((await http_get(self.port, "/health")).body)
        return {k["label"]: k["state"] for k in health["upstreams"]["up0"]["keys"]}

    async def store(self) -> str:
        health: dict[str, Any] = json.loads((await http_get(self.port, "/health")).body)
        return str(health["store"])


async def _instances(
    nursery: trio.Nursery, http: HTTPClient, fake: KeyedUpstream, store: str
) -> list[_Instance]:
    url = await nursery.start(fake.serve)
    text = ini(url).replace(
        "[proxy]\n", f"[proxy]\nstore = {store}\nstore_timeout = 50\nstore_prefix = t22:\n"
    )
    out = []
    for _ in range(2):
        config = config_from(text, ENV)
        runtime = Runtime(config, http)
        _RUNTIMES.append(runtime)
        bound = await nursery.start(partial(serve, config, runtime=runtime))
        out.append(_Instance(runtime, bound[0]))
    return out


async def _health_says(instance: _Instance, label: str, state: str, seconds: float = 2) -> bool:
    with trio.move_on_after(seconds):
        while (await instance.keys())[label] != state:  # noqa: ASYNC110  (over HTTP)
            await trio.sleep(0.02)
        return True
    return False


async def test_a_key_rate_limited_on_one_instance_is_skipped_by_the_other_at_once(
    redis_server: RedisServer, http: HTTPClient
) -> None:
    fake = KeyedUpstream(lambda key, body: rate_limited(30) if key == A else answer(body))
    async with trio.open_nursery() as nursery:
        one, two = await _instances(nursery, http, fake, redis_server.url)
        assert (await one.chat()).status == 200
        assert fake.keys == [A, B]  # the 429 on A, then B at once
        started = trio.current_time()
        assert await _health_says(two, "KEY_A", "cooling")
        shared_in = trio.current_time() - started
        seen = len(fake.seen)
        answers = [await two.chat() for _ in range(3)]
        on_two = fake.keys[seen:]
        nursery.cancel_scope.cancel()
    assert [r.status for r in answers] == [200] * 3
    # Instance two never sent key A: it learned the cool-down from Redis. Without the shared
    # store its first request would go to A (an idle pool starts with the first key).
    assert on_two == [B, B, B]
    assert shared_in < 1.0
    # The hash holds `version` and key A's entry, named by its fingerprint, never by the key.
    assert _fields(redis_server) == 2
    field = json.dumps(["k", "up0", key_fingerprint(A)])
    assert redis_server.integer("HEXISTS", HASH, field) == 1
    assert redis_server.command("HGET", HASH, field).endswith(b" 1 rate_limited")


async def test_the_control_without_a_shared_store_the_other_instance_pays_the_429(
    http: HTTPClient,
) -> None:
    fake = KeyedUpstream(lambda key, body: rate_limited(30) if key == A else answer(body))
    async with trio.open_nursery() as nursery:
        one, two = await _instances(nursery, http, fake, "memory")
        assert (await one.chat()).status == 200
        await trio.sleep(0.3)
        seen = len(fake.seen)
        assert (await two.chat()).status == 200
        nursery.cancel_scope.cancel()
    assert fake.keys[seen:] == [A, B]


async def test_a_key_refused_on_one_instance_is_skipped_by_the_other(
    redis_server: RedisServer, http: HTTPClient
) -> None:
    fake = KeyedUpstream(lambda key, body: refused() if key == A else answer(body))
    async with trio.open_nursery() as nursery:
        one, two = await _instances(nursery, http, fake, redis_server.url)
        assert (await one.chat()).status == 200
        assert fake.keys == [A, B]
        assert await _health_says(two, "KEY_A", "disabled")
        seen = len(fake.seen)
        answers = [await two.chat() for _ in range(3)]
        on_two = fake.keys[seen:]
        # A reload of instance two re-enables the key for both (it may have been fixed).
        two.runtime.reload(two.runtime.service.config)
        assert await _health_says(one, "KEY_A", "ready")
        nursery.cancel_scope.cancel()
    assert [r.status for r in answers] == [200] * 3
    assert on_two == [B, B, B]


async def test_redis_down_each_instance_keeps_its_own_health(
    redis_server: RedisServer, http: HTTPClient
) -> None:
    fake = KeyedUpstream(lambda key, body: rate_limited(30) if key == A else answer(body))
    async with trio.open_nursery() as nursery:
        one, two = await _instances(nursery, http, fake, redis_server.url)
        assert await one.store() == "ok"
        redis_server.stop()
        assert await poll_until(lambda: one.runtime.limiter.status() == "degraded", 3)
        assert (await one.chat()).status == 200
        assert fake.keys == [A, B]
        # One keeps its own cool-down: its next request goes straight to B.
        assert (await one.chat()).status == 200
        assert fake.keys == [A, B, B]
        assert (await one.keys())["KEY_A"] == "cooling"
        # Two cannot hear of it: it pays the 429 itself, and still answers.
        await trio.sleep(0.3)
        assert (await two.keys())["KEY_A"] == "ready"
        assert (await two.chat()).status == 200
        assert fake.keys[3:] == [A, B]
        assert (await two.keys())["KEY_A"] == "cooling"
        degraded = await two.store()
        # Redis back (empty): both publish what they hold; the cool-down is in Redis again.
        redis_server.start()
        assert await poll_until(lambda: one.runtime.limiter.status() == "ok", 5)
        fields = json.dumps(["k", "up0", key_fingerprint(A)])
        assert await poll_until(lambda: redis_server.integer("HEXISTS", HASH, fields) == 1, 5)
        nursery.cancel_scope.cancel()
    assert degraded == "degraded"
