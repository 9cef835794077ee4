"""Issue 22's acceptance, end to end: two trioproxy daemon processes (`python -m trioproxy`) on
one real `redis-server` share a client key's token rate and the upstream keys' health; Redis
stopped mid-run leaves both serving on local limits, and its return makes the limits shared again.

Black box: the daemons are subprocesses (tests/lifecycle_support.py), the clients raw sockets,
the upstream a fake on loopback that answers per key (tests/test_keypool.py), and what is in
Redis is read over a plain socket (tests/redis_server.py). The in-process versions of these
checks, with their controls on separate memory stores, are tests/test_store_redis.py and
tests/test_store_health.py.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from tests import test_store_redis
from tests.lifecycle_support import (
    chat_body,
    chat_request,
    daemon_ini,
    exchange,
    gauge,
    http_get,
    parse_responses,
    poll_until,
    spawn_daemon,
    wait_healthy,
)
from tests.redis_server import free_port
from tests.test_keypool import ENV, A, B, KeyedUpstream, answer, ini, rate_limited
from tests.test_store_redis import CLOSE, KEY, WARM

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    import pytest

    from tests.lifecycle_support import Daemon, Response
    from tests.redis_server import RedisServer

# The Redis tests' skip condition (a failure under CI=true) and warning filters, and their
# redis-server per test.
pytestmark = test_store_redis.pytestmark
redis_server = test_store_redis.redis_server

# Both config templates (test_store_redis._ini, test_keypool.ini) open with this; daemon_ini
# writes the daemon's own [proxy] head, so theirs is cut.
HEAD = "[proxy]\nlisten = 127.0.0.1:0\n"
# _ini's 50 ms suits an idle machine; on a loaded 2-core one a Redis answer can take longer, and
# a request whose admission times out is decided by local limits (the store degrades), which
# would pass a 429 these tests expect. A stopped Redis refuses at once, so no test waits on it.
TIMEOUT = ("store_timeout = 50\n", "store_timeout = 2000\n")
TPM = 30  # `team`'s tokens per minute; one demo answer uses more
BUCKET = "t22:{team}:t"  # team's token bucket in Redis (store/redis.py's module docstring)


def _config(redis_url: str, port: int, upstream_url: str | None = None) -> str:
    """One daemon's config: the store, key `team` (tpm), key `warm` (rpm 1000), model `demo`;
    with `upstream_url`, model `claude` on a pool of upstream keys ${KEY_A}, ${KEY_B} there."""
    body = test_store_redis._ini(redis_url, f"tpm = {TPM}")
    assert body.count(HEAD) == 1 and TIMEOUT[0] in body, body  # the template still fits
    body = body.replace(HEAD, "").replace(*TIMEOUT)
    if upstream_url is not None:
        pool = ini(upstream_url)
        assert pool.startswith(HEAD), pool
        body += pool.removeprefix(HEAD)
    return daemon_ini(port, body)


@asynccontextmanager
async def _daemons(tmp_path: Path, config: Callable[[int], str]) -> AsyncIterator[list[Daemon]]:
    """Two daemons, each serving `config(port)`, healthy; killed at the end whatever happened."""
    daemons: list[Daemon] = []
    try:
        for name in ("one", "two"):
            port = free_port()
            workdir = tmp_path / name  # spawn_daemon writes proxy.ini and daemon.log there
            workdir.mkdir()
            daemons.append(spawn_daemon(workdir, config(port), port))
        for daemon in daemons:
            # serve() connects to the store before it listens: healthy means connected.
            await wait_healthy(daemon)
        yield daemons
    finally:
        for daemon in daemons:
            daemon.kill()


def _logs(daemons: list[Daemon]) -> str:
    return "\n".join(daemon.stderr()[-2000:] for daemon in daemons)


async def _chat(daemon: Daemon, key: str, model: str = "demo") -> Response:
    request = chat_request(chat_body(model=model, stream=False), key=key, extra=CLOSE)
    got = await exchange(daemon.port, request, 10)
    responses = parse_responses(got.data, eof=got.closed)
    assert responses, got
    return responses[0]


async def _health(daemon: Daemon) -> dict[str, Any]:
    health: dict[str, Any] = json.loads((await http_get(daemon.port, "/health")).body)
    return health


async def _health_until(
    daemon: Daemon, check: Callable[[dict[str, Any]], bool], seconds: float = 5
) -> bool:
    """Poll the daemon's /health until `check` holds (another process: nothing to wait on)."""
    with trio.move_on_after(seconds):
        while not check(await _health(daemon)):  # noqa: ASYNC110  (over HTTP)
            await trio.sleep(0.05)
        return True
    return False


def _store_is(state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda health: health["store"] == state


def _key_is(label: str, state: str) -> Callable[[dict[str, Any]], bool]:
    def check(health: dict[str, Any]) -> bool:
        keys = {k["label"]: k["state"] for k in health["upstreams"]["up0"]["keys"]}
        return bool(keys[label] == state)

    return check


def _overdrawn(redis: RedisServer) -> bool:
    """team's shared token bucket is below zero (`$-1`: no bucket yet, which is a full one)."""
    tokens = redis.command("HGET", BUCKET, "tokens")
    return tokens != b"$-1" and float(tokens) < 0


async def _token_rate_is_shared(redis: RedisServer, one: Daemon, two: Daemon) -> None:
    """A request on `one` uses more than team's tpm; team's next request, on `two`, is refused.

    `two` has not used team's tokens itself, so its own (local) bucket is full: only the shared
    bucket can refuse it. The charge reaches Redis from `one`'s background task ~20 ms after the
    request ends (RELEASE_DELAY in store/redis.py), hence the poll."""
    first = await _chat(one, KEY)
    assert first.status == 200, first
    used = json.loads(first.body)["usage"]["total_tokens"]
    assert used > TPM
    charged = await poll_until(lambda: _overdrawn(redis), 5)
    refused = await _chat(two, KEY)
    assert refused.status == 429, (refused, charged)
    assert "token rate limit" in json.loads(refused.body)["error"]["message"]
    # TPM a minute: above zero again (used - TPM) * 60 / TPM s after the charge, less the time
    # the poll and the request took.
    assert 1 <= int(refused.headers["retry-after"]) <= (used - TPM) * 60 // TPM + 1
    assert charged


async def test_a_token_rate_spent_on_one_daemon_refuses_the_next_request_on_the_other(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with _daemons(tmp_path, lambda port: _config(redis_server.url, port)) as (one, two):
        try:
            await _token_rate_is_shared(redis_server, one, two)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_logs([one, two])}") from exc


async def test_an_upstream_key_cooled_down_by_one_daemon_is_skipped_by_the_other(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemons read the upstream keys from ${KEY_A}, ${KEY_B}: spawn_daemon passes the
    # environment (less *_API_KEY), so /health labels the keys KEY_A and KEY_B.
    for name in ("KEY_A", "KEY_B"):
        monkeypatch.setenv(name, ENV[name])
    fake = KeyedUpstream(lambda key, body: rate_limited(30) if key == A else answer(body))
    async with trio.open_nursery() as nursery:
        url = await nursery.start(fake.serve)

        def config(port: int) -> str:
            return _config(redis_server.url, port, url)

        async with _daemons(tmp_path, config) as (one, two):
            first = await _chat(one, WARM, "claude")
            on_one = fake.keys
            # A 429 with retry-after 30 cools KEY_A for 30 s; two reads that from Redis
            # (HEALTH_REFRESH, 0.1 s), and shows it on its /health.
            seen = await _health_until(two, _key_is("KEY_A", "cooling"))
            sent = len(fake.seen)
            answers = [await _chat(two, WARM, "claude") for _ in range(3)]
            on_two = fake.keys[sent:]
            logs = _logs([one, two])
        nursery.cancel_scope.cancel()
    assert first.status == 200, (first, logs)
    assert on_one == [A, B]  # the 429 on A, then B at once
    assert [r.status for r in answers] == [200] * 3, (answers, logs)
    # two never sent key A: an idle pool starts with its first key, so without the shared
    # health its first request would go to A and pay the 429 again.
    assert on_two == [B, B, B], logs
    assert seen


async def test_redis_stopped_degrades_both_daemons_to_local_limits_and_its_return_shares_them(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with _daemons(tmp_path, lambda port: _config(redis_server.url, port)) as daemons:
        one, two = daemons
        before = [await _chat(daemon, WARM) for daemon in daemons]
        in_redis = redis_server.integer("EXISTS", "t22:{warm}:r")  # decided there

        redis_server.stop()
        during = [await _chat(daemons[i % 2], WARM) for i in range(6)]
        degraded = [await _health_until(d, _store_is("degraded")) for d in daemons]
        down = [await _health(d) for d in daemons]
        metrics = [await d.metrics() for d in daemons]

        redis_server.start()  # on the same port, empty: a Redis restarted without persistence
        # The background task probes a degraded store every PROBE_INTERVAL (0.5 s).
        recovered = [await _health_until(d, _store_is("ok")) for d in daemons]
        try:
            assert in_redis == 1
            assert [r.status for r in before + during] == [200] * 8, before + during
            assert degraded == [True, True], down
            assert [h["status"] for h in down] == ["ok", "ok"]  # still serving
            # Every request while Redis was down was decided by the daemon's own limits.
            fallbacks = [gauge(text, "trioproxy_store_fallbacks_total") for text in metrics]
            assert all(count >= 3 for count in fallbacks), fallbacks
            assert recovered == [True, True]
            await _token_rate_is_shared(redis_server, one, two)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_logs(daemons)}") from exc
