"""Key pools and upstream health, the pure parts: whose fault a failure is, key cool-downs, the
circuit breaker, the selection rule, the store across reloads, and the pool's config."""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from tests.conftest import config_from
from trioproxy.config import parse_config
from trioproxy.config_types import UpstreamConfig, UpstreamKey
from trioproxy.errors import (
    ConfigError,
    UpstreamConnectionError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from trioproxy.routing.health import (
    Breaker,
    BreakerState,
    Failure,
    HealthPolicy,
    KeyHealth,
    KeyState,
    admit,
    after_answer,
    after_key_failure,
    classify,
)
from trioproxy.routing.pool import KeyPools, Lease, NoKey, pick

if TYPE_CHECKING:
    import pathlib

POLICY = HealthPolicy(
    key_cooldown=1.0, key_cooldown_max=8.0, quota_cooldown=600.0, breaker_failures=3,
    breaker_open=10.0,
)  # fmt: skip


def status_error(status: int, message: str = "x", **kw: str) -> UpstreamStatusError:
    return UpstreamStatusError(message, upstream_status=status, **kw)  # type: ignore[arg-type]


# --- whose fault --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (status_error(429, error_type="rate_limit_error"), Failure.RATE_LIMITED),
        (status_error(429, error_type="tokens", code="rate_limit_exceeded"), Failure.RATE_LIMITED),
        # OpenAI: out of credit is a 429 too, told apart by its code / type.
        (status_error(429, error_type="insufficient_quota"), Failure.QUOTA),
        (status_error(429, code="insufficient_quota"), Failure.QUOTA),
        (status_error(402, error_type="billing_error"), Failure.QUOTA),
        # Anthropic: a 400 whose message says so (anthropics/claude-code#4208).
        (
            status_error(
                400,
                "Your credit balance is too low to access the Anthropic API. Please go to "
                "Plans & Billing to upgrade or purchase credits.",
                error_type="invalid_request_error",
            ),
            Failure.QUOTA,
        ),
        (status_error(401, error_type="authentication_error"), Failure.AUTH),
        (status_error(403, error_type="permission_error"), Failure.AUTH),
        (status_error(529, error_type="overloaded_error"), Failure.UPSTREAM),
        (status_error(500), Failure.UPSTREAM),
        (status_error(503), Failure.UPSTREAM),
        (UpstreamTimeout("slow"), Failure.UPSTREAM),
        (UpstreamConnectionError("refused"), Failure.UPSTREAM),
        (status_error(400, "messages: bad", error_type="invalid_request_error"), Failure.OTHER),
        (status_error(404), Failure.OTHER),
    ],
)  # fmt: skip
def test_classify_says_whose_fault_a_failure_is(exc: Exception, failure: Failure) -> None:
    assert classify(exc) is failure  # type: ignore[arg-type]


def test_an_overloaded_event_inside_a_200_stream_is_the_upstreams() -> None:
    exc = UpstreamStatusError("Overloaded", upstream_status=200, status=529)
    assert classify(exc) is Failure.UPSTREAM


# --- key health ---------------------------------------------------------------------------------


def test_a_429_with_retry_after_cools_the_key_that_long() -> None:
    health = after_key_failure(
        KeyHealth(), Failure.RATE_LIMITED, now=100.0, policy=POLICY, retry_after=23.0, jitter=0.9
    )
    assert health.until == 123.0
    assert health.state(122.9) is KeyState.COOLING
    assert health.state(123.0) is KeyState.READY
    assert health.remaining(110.0) == 13.0


def test_a_429_without_retry_after_backs_off_exponentially_with_jitter_up_to_the_max() -> None:
    health = KeyHealth()
    delays = []
    for _ in range(6):
        health = after_key_failure(
            health, Failure.RATE_LIMITED, now=0.0, policy=POLICY, retry_after=None, jitter=1.0
        )
        delays.append(health.until)
        health = KeyHealth(until=0.0, reason=health.reason, strikes=health.strikes)
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]  # doubled, capped at key_cooldown_max
    low = after_key_failure(
        KeyHealth(strikes=2), Failure.RATE_LIMITED, now=0.0, policy=POLICY, retry_after=None,
        jitter=0.0,
    )  # fmt: skip
    assert low.until == 2.0  # jitter 0: half of the 4 s ceiling


def test_a_success_ends_the_run_of_429s_but_not_the_cool_down() -> None:
    pools = KeyPools()
    upstream = UpstreamConfig("u", "anthropic", api_key="k-a")
    key = upstream.pool[0]
    pools.report(upstream, key, Failure.RATE_LIMITED, now=0.0, retry_after=None, jitter=1.0)
    pools.report(upstream, key, Failure.RATE_LIMITED, now=0.0, retry_after=None, jitter=1.0)
    assert pools.store.key("u", key.id).strikes == 2
    pools.report(upstream, key, None, now=0.5)
    assert pools.store.key("u", key.id) == KeyHealth(until=2.0, reason="rate_limited", strikes=0)


def test_quota_is_a_long_cool_down_and_auth_disables_until_reload() -> None:
    quota = after_key_failure(
        KeyHealth(), Failure.QUOTA, now=5.0, policy=POLICY, retry_after=None, jitter=0.5
    )
    assert quota.until == 605.0
    refused = after_key_failure(
        KeyHealth(), Failure.AUTH, now=5.0, policy=POLICY, retry_after=None, jitter=0.5
    )
    assert refused.state(1e12) is KeyState.DISABLED
    assert refused.remaining(5.0) == math.inf


# --- the circuit breaker ------------------------------------------------------------------------


def test_breaker_opens_after_failures_in_a_row_then_one_probe_closes_it() -> None:
    breaker = Breaker()
    for now in (1.0, 2.0):
        breaker = after_answer(breaker, upstream_failed=True, now=now, policy=POLICY)
        assert breaker.state is BreakerState.CLOSED
    breaker = after_answer(breaker, upstream_failed=True, now=3.0, policy=POLICY)
    assert (breaker.state, breaker.until) == (BreakerState.OPEN, 13.0)
    assert admit(breaker, now=12.9, policy=POLICY) == (breaker, False)
    probing, admitted = admit(breaker, now=13.0, policy=POLICY)
    assert admitted and probing.state is BreakerState.HALF_OPEN
    assert admit(probing, now=13.1, policy=POLICY)[1] is False  # one probe at a time
    closed = after_answer(probing, upstream_failed=False, now=13.5, policy=POLICY)
    assert closed == Breaker()


def test_a_failed_probe_opens_the_breaker_again_and_a_lost_probe_is_replaced() -> None:
    opened = Breaker(BreakerState.OPEN, 3, 10.0)
    probing, _ = admit(opened, now=10.0, policy=POLICY)
    again = after_answer(probing, upstream_failed=True, now=11.0, policy=POLICY)
    assert (again.state, again.until) == (BreakerState.OPEN, 21.0)
    # A probe whose request was cancelled gives no verdict: another is let through later.
    assert admit(probing, now=20.0, policy=POLICY)[1] is True


def test_a_success_resets_the_count_and_no_breaker_when_failures_is_0() -> None:
    breaker = after_answer(Breaker(), upstream_failed=True, now=0.0, policy=POLICY)
    breaker = after_answer(breaker, upstream_failed=False, now=0.0, policy=POLICY)
    assert breaker == Breaker()
    off = HealthPolicy(breaker_failures=0)
    for _ in range(100):
        breaker = after_answer(breaker, upstream_failed=True, now=0.0, policy=off)
    assert breaker.state is BreakerState.CLOSED


# --- the selection rule -------------------------------------------------------------------------


def test_pick_takes_least_in_flight_per_weight_then_lowest_pass_then_first() -> None:
    assert pick([(2, 0.0, 1.0), (1, 5.0, 1.0)]) == 1
    assert pick([(2, 0.0, 4.0), (1, 0.0, 1.0)]) == 0  # 0.5 per weight beats 1
    assert pick([(0, 3.0, 1.0), (0, 1.0, 1.0)]) == 1
    assert pick([(0, 1.0, 1.0), (0, 1.0, 1.0)]) == 0


def pool_upstream(*keys: UpstreamKey, name: str = "u") -> UpstreamConfig:
    return UpstreamConfig(name, "anthropic", api_key=keys[0].key, keys=keys)


A, B, C = UpstreamKey("a", "k-a"), UpstreamKey("b", "k-b"), UpstreamKey("c", "k-c", 3.0)


def test_an_idle_pool_rotates_in_proportion_to_weight() -> None:
    pools, upstream = KeyPools(), pool_upstream(A, B, C)
    chosen: Counter[str] = Counter()
    for _ in range(50):
        lease = pools.acquire(upstream, 0.0, set())
        assert isinstance(lease, Lease)
        chosen[lease.key.label] += 1
        pools.release(lease)
    assert chosen == {"a": 10, "b": 10, "c": 30}


def test_a_busy_pool_sends_the_next_request_to_the_key_with_most_room() -> None:
    pools, upstream = KeyPools(), pool_upstream(A, B)
    first = pools.acquire(upstream, 0.0, set())
    second = pools.acquire(upstream, 0.0, set())
    assert isinstance(first, Lease) and isinstance(second, Lease)
    assert {first.key.label, second.key.label} == {"a", "b"}
    pools.release(first)
    third = pools.acquire(upstream, 0.0, set())
    assert isinstance(third, Lease) and third.key == first.key  # the one with nothing in flight


def test_cooling_disabled_and_tried_keys_are_skipped_and_no_key_says_when() -> None:
    pools, upstream = KeyPools(), pool_upstream(A, B, C)
    pools.report(upstream, A, Failure.RATE_LIMITED, now=0.0, retry_after=30.0)
    pools.report(upstream, B, Failure.AUTH, now=0.0)
    lease = pools.acquire(upstream, 1.0, set())
    assert isinstance(lease, Lease) and lease.key == C
    # C is ready but this request already failed on it: it may try C again now, as a retry.
    assert pools.acquire(upstream, 1.0, {C.id}) == NoKey(retry_in=0.0, cooling=1, disabled=1)
    pools.report(upstream, C, Failure.RATE_LIMITED, now=1.0, retry_after=5.0)
    assert pools.acquire(upstream, 2.0, set()) == NoKey(retry_in=4.0, cooling=2, disabled=1)
    assert isinstance(pools.acquire(upstream, 6.0, set()), Lease)


def test_every_key_disabled_gives_no_retry_time() -> None:
    pools, upstream = KeyPools(), pool_upstream(A)
    pools.report(upstream, A, Failure.AUTH, now=0.0)
    assert pools.acquire(upstream, 1.0, set()) == NoKey(retry_in=None, cooling=0, disabled=1)


def test_a_new_key_starts_level_with_the_pool_instead_of_taking_every_request() -> None:
    pools = KeyPools()
    for _ in range(10):
        lease = pools.acquire(pool_upstream(A, B), 0.0, set())
        assert isinstance(lease, Lease)
        pools.release(lease)
    grown = pool_upstream(A, B, UpstreamKey("d", "k-d"))
    chosen: Counter[str] = Counter()
    for _ in range(9):
        lease = pools.acquire(grown, 0.0, set())
        assert isinstance(lease, Lease)
        chosen[lease.key.label] += 1
        pools.release(lease)
    assert chosen == {"a": 3, "b": 3, "d": 3}


def test_weighted_upstreams_are_ordered_by_weight_and_load() -> None:
    pools = KeyPools()
    one, two = pool_upstream(A, name="one"), pool_upstream(B, name="two")
    firsts: Counter[int] = Counter()
    for _ in range(8):
        order = pools.order("m", [one, two], [3.0, 1.0])
        assert sorted(order) == [0, 1]  # the other one stays as failover
        firsts[order[0]] += 1
    assert firsts == {0: 6, 1: 2}
    lease = pools.acquire(one, 0.0, set())  # one request in flight on "one"
    assert pools.order("m2", [one, two], [1.0, 1.0])[0] == 1
    assert isinstance(lease, Lease)


# --- reloads ------------------------------------------------------------------------------------


def pool_config(*items: str) -> str:
    keys = ", ".join(items)
    return f"[upstream:u]\ntype = anthropic\napi_key = {keys}\n[model:m]\nupstream = u\n"


ENV = {"KEY_A": "sk-aaaaaaaaaaaa", "KEY_B": "sk-bbbbbbbbbbbb", "KEY_C": "sk-cccccccccccc"}


def test_a_reload_keeps_the_cool_down_of_a_key_still_listed_and_forgets_the_rest() -> None:
    pools = KeyPools()
    first = config_from(pool_config("${KEY_A}", "${KEY_B}"), ENV)
    pools.configure(first)
    upstream = first.upstreams["u"]
    a, b = upstream.pool
    pools.report(upstream, a, Failure.RATE_LIMITED, now=0.0, retry_after=30.0)
    pools.report(upstream, b, Failure.AUTH, now=0.0)
    second = config_from(pool_config("${KEY_C}", "${KEY_A}", "${KEY_B}"), ENV)
    pools.configure(second)
    assert pools.store.key("u", a.id).state(10.0) is KeyState.COOLING  # still cooling
    assert pools.store.key("u", b.id).state(10.0) is KeyState.READY  # disabled until reload
    third = config_from(pool_config("${KEY_C}"), ENV)
    pools.configure(third)
    assert pools.store.key("u", a.id) == KeyHealth()  # removed: forgotten


def test_a_stream_on_a_removed_key_still_releases_it() -> None:
    pools = KeyPools()
    first = config_from(pool_config("${KEY_A}", "${KEY_B}"), ENV)
    pools.configure(first)
    lease = pools.acquire(first.upstreams["u"], 0.0, set())
    assert isinstance(lease, Lease)
    pools.configure(config_from(pool_config("${KEY_C}"), ENV))
    assert pools._keys[("u", lease.key.id)].in_flight == 1  # the stream still holds it
    pools.release(lease)
    assert pools._keys[("u", lease.key.id)].in_flight == 0


# --- the pool in proxy.ini ----------------------------------------------------------------------


def test_a_key_list_is_labelled_by_its_variables_and_fingerprints() -> None:
    config = parse_config(
        pool_config("${KEY_A}", "${MANY}", "sk-literal-key-123"),
        {"KEY_A": "sk-aaaa", "MANY": "sk-m1,sk-m2"},
    )
    upstream = config.upstreams["u"]
    labels = [key.label for key in upstream.keys]
    assert labels[:3] == ["KEY_A", "MANY-1", "MANY-2"]
    assert labels[3].startswith("fp-") and "literal" not in labels[3]
    assert upstream.api_key == "sk-aaaa"  # the first key, for code that knows one
    assert upstream.enabled
    assert "sk-" not in repr(upstream)


def test_empty_items_are_left_out_with_a_warning_and_all_empty_disables() -> None:
    config = parse_config(pool_config("${KEY_A}", "${KEY_B}"), {"KEY_A": "sk-aaaa"})
    assert [key.label for key in config.upstreams["u"].keys] == ["KEY_A"]
    assert any("item 2 is empty: KEY_B is not set" in w for w in config.warnings)
    off = parse_config(pool_config("${KEY_A}", "${KEY_B:-}"), {})
    assert not off.upstreams["u"].enabled
    assert "KEY_A is not set" in off.upstreams["u"].disabled_reason
    single = parse_config(pool_config("${ANTHROPIC_API_KEY:-}"), {})
    assert single.upstreams["u"].disabled_reason == "ANTHROPIC_API_KEY is not set"  # as before


KEYS_FILE = """
# team keys
team-a   sk-team-a-0001   weight=3
sk-team-b-0002                      # unlabelled: a fingerprint
team-c   sk-team-c-0003
"""


def test_api_keys_file_takes_labels_and_weights() -> None:
    ini = "[upstream:u]\ntype = openai-responses\napi_keys_file = keys.txt\n"
    config = parse_config(ini, {}, files={"keys.txt": KEYS_FILE})
    keys = config.upstreams["u"].keys
    assert (keys[0].label, keys[0].weight) == ("team-a", 3.0)
    assert keys[1].label.startswith("fp-") and keys[1].weight == 1.0
    assert keys[2].label == "team-c"
    assert config.upstreams["u"].api_keys_file == "keys.txt"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a sk-1\nb sk-1\n", "keys.txt line 2: this key is already in the pool (keys.txt line 1)"),
        ("a sk-1\na sk-2\n", "keys.txt line 2: the label 'a' is already used"),
        ("a sk-1 weight=0\n", "keys.txt line 1: weight= must be a number > 0"),
        ("a b sk-1\n", "keys.txt line 1: expected 'KEY' or 'LABEL KEY'"),
        ("'sk-1'\n", "keys.txt line 1: the key is wrapped in quotes"),
    ],
)
def test_bad_key_files_are_errors_that_never_show_a_key(content: str, message: str) -> None:
    ini = "[upstream:u]\ntype = anthropic\napi_keys_file = keys.txt\n"
    with pytest.raises(ConfigError) as info:
        parse_config(ini, {}, files={"keys.txt": content})
    assert message in info.value.message
    assert "sk-1" not in info.value.message.replace("'sk-1'", "")


def test_a_key_file_that_cannot_be_read_names_the_line() -> None:
    ini = "[upstream:u]\ntype = anthropic\napi_keys_file = missing.txt\n"
    with pytest.raises(ConfigError, match=r"line 3: \[upstream:u\] api_keys_file cannot read"):
        parse_config(ini, {})


def test_health_settings_and_weighted_models_are_read() -> None:
    ini = (
        "[upstream:a]\ntype = anthropic\napi_key = k\nkey_cooldown = 2\nkey_cooldown_max = 30\n"
        "quota_cooldown = 900\nbreaker_failures = 0\nbreaker_open = 5\n"
        "[upstream:b]\ntype = anthropic\napi_key = k2\n"
        "[model:m]\nupstream = a, b\nstrategy = weighted\nweights = 3, 1\n"
    )
    config = parse_config(ini, {})
    a = config.upstreams["a"]
    assert (a.key_cooldown, a.key_cooldown_max, a.quota_cooldown) == (2.0, 30.0, 900.0)
    assert (a.breaker_failures, a.breaker_open) == (0, 5.0)
    (model,) = config.models
    assert (model.strategy, model.weights) == ("weighted", (3.0, 1.0))
    with pytest.raises(ConfigError, match="weights has 1 numbers for 2 upstreams"):
        parse_config(ini.replace("weights = 3, 1", "weights = 3"), {})
    with pytest.raises(ConfigError, match="weights applies only to strategy = weighted"):
        parse_config(ini.replace("strategy = weighted\n", ""), {})


def test_check_lists_each_pool_by_label_and_weight_never_the_key() -> None:
    from trioproxy.config import describe

    ini = (
        "[upstream:u]\ntype = anthropic\napi_key = ${KEY_A}, sk-literal-key-9\n"
        "api_keys_file = keys.txt\n[upstream:d]\ntype = demo\n"
        "[model:m]\nupstream = u, d\nstrategy = weighted\nweights = 3, 1\n"
    )
    config = parse_config(ini, ENV, files={"keys.txt": "heavy sk-heavy-key-1 weight=2\n"})
    text = describe(config)
    assert "sk-" not in text
    assert "  u  3 keys from keys.txt: KEY_A, fp-" in text
    assert ", heavy (weight 2)" in text
    assert "m  -> u, d [weighted 3:1]" in text


def test_the_key_file_is_read_again_by_every_load(tmp_path: pathlib.Path) -> None:
    # A SIGHUP reload calls load_config, which reads the file again: keys added or removed
    # there take effect without a restart.
    from trioproxy.config import load_config

    (tmp_path / "keys.txt").write_text("one sk-one-0001\n")
    (tmp_path / "proxy.ini").write_text(
        "[upstream:u]\ntype = anthropic\napi_keys_file = keys.txt\n[model:m]\nupstream = u\n"
    )
    first = load_config(tmp_path / "proxy.ini", environ={})
    (tmp_path / "keys.txt").write_text("one sk-one-0001\ntwo sk-two-0002\n")
    second = load_config(tmp_path / "proxy.ini", environ={})
    assert [k.label for k in first.upstreams["u"].keys] == ["one"]
    assert [k.label for k in second.upstreams["u"].keys] == ["one", "two"]
