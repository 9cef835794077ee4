"""store/health.py without Redis: what `SharedHealth` sends, and how it adopts what comes back
(the script's reply is written by hand here; tests/test_store_health.py runs the real one)."""

from __future__ import annotations

import json
import math

from trioproxy.routing.health import Breaker, BreakerState, KeyHealth
from trioproxy.routing.pool import HealthStore, KeyPools, MemoryStore
from trioproxy.store.health import SharedHealth

KEY_A = json.dumps(["k", "up0", "aaaa"])
KEY_B = json.dumps(["k", "up0", "bbbb"])
BREAKER = json.dumps(["b", "up0", ""])


def _triples(args: list[str]) -> dict[str, tuple[str, str]]:
    return {args[i + 1]: (args[i], args[i + 2]) for i in range(0, len(args), 3)}


def test_it_is_a_health_store_like_the_memory_one() -> None:
    stores: list[HealthStore] = [SharedHealth(), MemoryStore()]
    for store in stores:
        pools = KeyPools(store)
        store.set_key("up0", "aaaa", KeyHealth(until=5.0, reason="rate_limited", strikes=1))
        store.set_breaker("up0", Breaker(BreakerState.OPEN, 5, 9.0))
        assert store.key("up0", "aaaa").until == 5.0
        assert store.breaker("up0").state is BreakerState.OPEN
        store.set_key("up0", "aaaa", KeyHealth())
        assert store.key("up0", "aaaa") == KeyHealth()
        assert pools.store is store


def test_changes_go_out_as_time_left_and_wake_the_task() -> None:
    woken = []
    health = SharedHealth(on_change=lambda: woken.append(1))
    health.set_key("up0", "aaaa", KeyHealth(until=130.0, reason="rate_limited", strikes=2))
    health.set_key("up0", "bbbb", KeyHealth(until=math.inf, reason="auth"))
    health.set_breaker("up0", Breaker(BreakerState.OPEN, 5, 112.5))
    assert len(woken) == 3 and health.dirty
    args, taken = health.changes(now=100.0)
    assert _triples(args) == {
        KEY_A: ("k", "30000 2 rate_limited"),
        KEY_B: ("k", "-1 0 auth"),
        BREAKER: ("b", "open 5 12500"),
    }
    assert set(taken) == {KEY_A, KEY_B, BREAKER}
    assert not health.dirty
    health.restore(taken)  # the round trip failed: they go again
    assert health.dirty


def test_the_reply_replaces_the_copy_on_the_local_clock_except_what_changed_meanwhile() -> None:
    health = SharedHealth()
    health.set_key("up0", "aaaa", KeyHealth(until=110.0, reason="rate_limited", strikes=1))
    _, taken = health.changes(now=100.0)
    # While the round trip is out, this instance cools key B.
    health.set_key("up0", "bbbb", KeyHealth(until=105.0, reason="rate_limited", strikes=1))
    server_now = 1_700_000_000_000
    reply = [
        7,
        server_now,
        KEY_A.encode(),
        f"{server_now + 60_000} 3 rate_limited".encode(),  # another instance's, longer
        KEY_B.encode(),
        f"{server_now + 1_000} 1 rate_limited".encode(),
        BREAKER.encode(),
        f"open 5 {server_now + 30_000}".encode(),
    ]
    health.apply(reply, now=101.0, taken=taken)
    assert health.version == 7
    assert health.key("up0", "aaaa") == KeyHealth(until=161.0, reason="rate_limited", strikes=3)
    assert health.key("up0", "bbbb").until == 105.0  # changed meanwhile: this copy, sent next
    assert health.breaker("up0") == Breaker(BreakerState.OPEN, 5, 131.0)
    # An entry gone from Redis (a reload elsewhere re-enabled it) is gone here.
    health.changes(now=101.0)
    health.apply([8, server_now], now=101.0, taken={KEY_B: "k"})
    assert health.key("up0", "aaaa") == KeyHealth()
    assert health.breaker("up0") == Breaker()
    # Nothing new and nothing sent: the copy stands.
    health.set_key("up0", "aaaa", KeyHealth(until=150.0, reason="quota"))
    health.changes(now=101.0)
    health.apply([8, server_now], now=101.0, taken={})
    assert health.key("up0", "aaaa").reason == "quota"


def test_a_redis_that_lost_the_state_gets_everything_again() -> None:
    health = SharedHealth()
    health.set_key("up0", "aaaa", KeyHealth(until=110.0, reason="rate_limited"))
    health.set_breaker("up0", Breaker(BreakerState.OPEN, 5, 130.0))
    _, taken = health.changes(now=100.0)
    reply = [5, 0, KEY_A, "10000 0 rate_limited", BREAKER, "open 5 30000"]
    health.apply(reply, now=100.0, taken=taken)
    assert health.version == 5
    health.apply([0, 0], now=100.0, taken={})  # version went back: Redis restarted empty
    assert health.key("up0", "aaaa").reason == "rate_limited"  # kept, and sent again
    args, _ = health.changes(now=100.0)
    assert set(_triples(args)) == {KEY_A, BREAKER}
    assert health.version == -1  # the next reply is read whole


def test_a_reload_re_enables_disabled_keys_everywhere_and_forgets_unlisted_ones() -> None:
    health = SharedHealth()
    health.set_key("up0", "aaaa", KeyHealth(until=math.inf, reason="auth"))
    health.set_key("up0", "bbbb", KeyHealth(until=110.0, reason="rate_limited"))
    health.set_key("gone", "cccc", KeyHealth(until=110.0, reason="rate_limited"))
    health.set_breaker("gone", Breaker(BreakerState.OPEN, 5, 130.0))
    health.changes(now=100.0)
    health.retain({("up0", "aaaa"), ("up0", "bbbb")}, {"up0"})
    assert health.key("up0", "aaaa") == KeyHealth()
    assert health.key("up0", "bbbb").until == 110.0
    assert health.key("gone", "cccc") == KeyHealth()
    args, _ = health.changes(now=100.0)
    assert _triples(args) == {KEY_A: ("x", "")}  # delete it in Redis if still disabled there
    # What Redis still holds about unlisted keys and upstreams is not adopted.
    reply = [3, 0, json.dumps(["k", "gone", "cccc"]), "50000 1 rate_limited"]
    health.apply([*reply, json.dumps(["b", "gone", ""]), "open 5 9000"], now=100.0, taken={})
    assert health.key("gone", "cccc") == KeyHealth()
    assert health.breaker("gone") == Breaker()
