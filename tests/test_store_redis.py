"""Shared per-key limits against a real Redis (issue 22): `redis-server` is started by each test
on a free port. Skipped, with the reason, only where the binary is absent; .ci/run installs it,
so CI never skips these.

Two runtimes (or two daemon processes) on one Redis enforce one combined limit; a killed
instance's concurrency slots expire; a stopped or silent Redis degrades every request to local
limits within `store_timeout`, without a failed request, and recovery is automatic.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio

from tests.conftest import config_from
from tests.lifecycle_support import (
    ROOT,
    Response,
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
from tests.redis_server import REDIS_SERVER, RedisServer, free_port
from trioproxy.config_types import ClientKey
from trioproxy.errors import RateLimited
from trioproxy.metrics import Metrics
from trioproxy.server import serve
from trioproxy.service import Runtime
from trioproxy.upstream import HTTPClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

pytestmark = [
    pytest.mark.skipif(
        REDIS_SERVER is None,
        reason="redis-server is not installed (apt-get install redis-server; .ci/run does)",
    ),
    # coredis 6.9 leaves anyio memory streams unclosed when a connection attempt is refused
    # (its reconnect path); the warning comes from its __del__, not from trioproxy.
    pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

KEY = "sk-team-0123456789abcdef"
WARM = "sk-warm-0123456789abcdef"
CLOSE = "Connection: close\r\n"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _ini(url: str, key_limits: str, *, port: int = 0, delay: float = 0.0) -> str:
    return f"""
[proxy]
listen = 127.0.0.1:{port}
store = {url}
store_timeout = 50
store_prefix = t22:

[key:team]
key = {KEY}
{key_limits}

[key:warm]
key = {WARM}
rpm = 1000

[upstream:demo]
type = demo
demo_delay = {delay}

[model:demo]
upstream = demo
"""


class _Instance:
    def __init__(self, runtime: Runtime, url: str) -> None:
        self.runtime = runtime
        self.port = int(url.rsplit(":", 1)[1])

    async def post(self, *, stream: bool = False) -> Response:
        got = await exchange(
            self.port, chat_request(chat_body(stream=stream), key=KEY, extra=CLOSE), 10
        )
        responses = parse_responses(got.data, eof=got.closed)
        assert responses, got
        return responses[0]

    async def health(self) -> dict[str, object]:
        health = json.loads((await http_get(self.port, "/health")).body)
        assert isinstance(health, dict)
        return health

    async def wait_store_ok(self, seconds: float = 10) -> None:
        with trio.fail_after(seconds):
            while (await self.health())["store"] != "ok":  # noqa: ASYNC110  (another process)
                await trio.sleep(0.05)

    async def metrics(self) -> str:
        return (await http_get(self.port, "/metrics")).body.decode()


# Runtimes the tests made: their stores are closed when the test ends (a store left open keeps
# its Redis connections, whose objects warn when collected, in whatever test runs then).
_OPENED: list[Runtime] = []


@pytest.fixture(autouse=True)
async def _close_stores() -> AsyncIterator[None]:
    yield
    while _OPENED:
        await _OPENED.pop().limiter.aclose()


async def _instances(
    nursery: trio.Nursery, http: HTTPClient, ini: str, count: int
) -> list[_Instance]:
    out = []
    for _ in range(count):
        config = config_from(ini)
        runtime = Runtime(config, http)
        _OPENED.append(runtime)
        urls = await nursery.start(partial(serve, config, runtime=runtime))
        assert await runtime.limiter.open()  # connected before the first request
        out.append(_Instance(runtime, urls[0]))
    return out


@pytest.fixture
async def http() -> AsyncIterator[HTTPClient]:
    client = HTTPClient()
    try:
        yield client
    finally:
        await client.aclose()


async def test_two_instances_on_one_redis_enforce_one_request_rate(
    redis_server: RedisServer, http: HTTPClient
) -> None:
    ini = _ini(redis_server.url, "rpm = 4")
    async with trio.open_nursery() as nursery:
        a, b = await _instances(nursery, http, ini, 2)
        statuses = [(await (a if i % 2 == 0 else b).post()).status for i in range(4)]
        fifth = await b.post()
        sixth = await a.post()
        nursery.cancel_scope.cancel()
    assert statuses == [200, 200, 200, 200]
    # 4 per minute: the next token is 15 s away for both instances.
    for limited in (fifth, sixth):
        assert limited.status == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 15
        assert json.loads(limited.body)["error"]["code"] == "rate_limit_exceeded"
    assert redis_server.command("EXISTS", "t22:{team}:r") == b":1"


async def test_separate_memory_stores_do_not_share_the_rate(http: HTTPClient) -> None:
    # The control for the test above: without a shared store each instance has its own bucket.
    ini = _ini("memory", "rpm = 4")
    async with trio.open_nursery() as nursery:
        a, b = await _instances(nursery, http, ini, 2)
        statuses = [(await (a if i % 2 == 0 else b).post()).status for i in range(6)]
        nursery.cancel_scope.cancel()
    assert statuses == [200] * 6


async def test_a_slot_held_on_one_instance_counts_on_the_other(
    redis_server: RedisServer, http: HTTPClient
) -> None:
    ini = _ini(redis_server.url, "max_concurrent = 1", delay=0.05)
    async with trio.open_nursery() as nursery:
        a, b = await _instances(nursery, http, ini, 2)
        streamed: list[Response] = []

        async def long_stream() -> None:
            streamed.append(await a.post(stream=True))

        nursery.start_soon(long_stream)
        assert await poll_until(lambda: a.runtime.lifecycle.streams == 1, 5)
        assert redis_server.integer("ZCARD", "t22:{team}:c") == 1
        refused = await b.post()
        assert await poll_until(lambda: bool(streamed), 10)
        # The release reaches Redis from the background task, right after the stream ends.
        assert await poll_until(lambda: not redis_server.integer("ZCARD", "t22:{team}:c"), 5)
        admitted = await b.post()
        nursery.cancel_scope.cancel()
    assert refused.status == 429
    assert refused.headers["retry-after"] == "1"
    assert "in flight" in json.loads(refused.body)["error"]["message"]
    assert streamed[0].status == 200
    assert admitted.status == 200


async def test_two_daemon_processes_share_one_limit(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    daemons = []
    for name in ("a", "b"):
        port = free_port()
        body = _ini(redis_server.url, "rpm = 3", port=port).replace(
            f"[proxy]\nlisten = 127.0.0.1:{port}\n", ""
        )
        workdir = tmp_path / name
        workdir.mkdir()
        daemons.append(spawn_daemon(workdir, daemon_ini(port, body), port))
    try:
        for daemon in daemons:
            await wait_healthy(daemon)
            # A daemon connects to the store at its first limited request; until then requests
            # use local limits. Warm each one up with another key.
            got = await exchange(
                daemon.port, chat_request(chat_body(stream=False), key=WARM, extra=CLOSE), 10
            )
            assert parse_responses(got.data, eof=got.closed)[0].status == 200
            await trio.sleep(0.3)
        answers = []
        for i in range(4):
            got = await exchange(
                daemons[i % 2].port, chat_request(chat_body(stream=False), key=KEY, extra=CLOSE), 10
            )
            answers.append(parse_responses(got.data, eof=got.closed)[0])
        health = json.loads((await http_get(daemons[1].port, "/health")).body)
    finally:
        for daemon in daemons:
            daemon.kill()
    assert [r.status for r in answers] == [200, 200, 200, 429], [d.stderr() for d in daemons]
    assert 1 <= int(answers[3].headers["retry-after"]) <= 20  # 3 per minute: 20 s a token
    assert health["store"] == "ok"
    assert health["store_backend"] == "redis"
    assert "redis://" not in json.dumps(health)  # /health names no URL (it may hold a password)


# A process that takes two concurrency slots through the store with a 1 s lease and reports
# when it holds them; the test kills it with SIGKILL, so nothing is released.
_HOLDER = """
import sys, trio
from trioproxy.config_types import ClientKey
from trioproxy.metrics import Metrics
from trioproxy.store.redis import RedisStore

async def main():
    store = RedisStore(sys.argv[1], prefix="t22:", timeout=2.0, metrics=Metrics(), lease_ttl=1.0)
    key = ClientKey("team", "sk", max_concurrent=2)
    await store.admit(key)
    await store.admit(key)
    print("holding", flush=True)
    await trio.sleep_forever()

trio.run(main)
"""


async def test_a_killed_instance_frees_its_slots_when_its_leases_expire(
    redis_server: RedisServer,
) -> None:
    holder = subprocess.Popen(  # noqa: ASYNC220  (its stdout is read in a thread)
        [sys.executable, "-c", _HOLDER, redis_server.url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        line = await trio.to_thread.run_sync(holder.stdout.readline)
        assert line == b"holding\n", holder.stderr.read() if holder.stderr else b""
        # It renews every 1/3 s: still held after longer than one lease.
        await trio.sleep(1.5)
        assert redis_server.integer("ZCARD", "t22:{team}:c") == 2
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        for pipe in (holder.stdout, holder.stderr):
            if pipe is not None:
                pipe.close()
    store = _store(redis_server)
    key = ClientKey("team", "sk", max_concurrent=2)
    with pytest.raises(RateLimited):
        await store.admit(key)  # both slots still leased to the dead process
    killed_at = time.monotonic()
    with trio.fail_after(5):
        while True:
            try:
                await store.admit(key)
                break
            except RateLimited:
                await trio.sleep(0.05)
    assert time.monotonic() - killed_at <= 1.5  # within one lease TTL
    await store.aclose()


def _store(redis_server: RedisServer, **kw: float) -> RedisStore:
    from trioproxy.store.redis import RedisStore

    return RedisStore(redis_server.url, prefix="t22:", timeout=0.5, metrics=Metrics(), **kw)


async def test_leases_are_renewed_while_held_and_deleted_on_release(
    redis_server: RedisServer,
) -> None:
    store = _store(redis_server, lease_ttl=0.6)
    key = ClientKey("team", "sk", max_concurrent=3)
    lease = await store.admit(key)
    await trio.sleep(1.5)  # two and a half lease lifetimes
    assert redis_server.integer("ZCARD", "t22:{team}:c") == 1
    store.release(key, lease)
    assert await poll_until(lambda: not redis_server.integer("EXISTS", "t22:{team}:c"), 5)
    assert store.leases_held() == 0
    await store.aclose()


async def test_redis_stopped_mid_run_degrades_to_local_limits_and_recovers(
    redis_server: RedisServer, http: HTTPClient
) -> None:
    ini = _ini(redis_server.url, "rpm = 600\nmax_concurrent = 5")
    async with trio.open_nursery() as nursery:
        (a,) = await _instances(nursery, http, ini, 1)
        before = await a.post()
        assert (await a.health())["store"] == "ok"
        assert redis_server.command("EXISTS", "t22:{team}:r") == b":1"

        redis_server.stop()
        during = [await a.post() for _ in range(5)]
        health = await a.health()
        metrics = await a.metrics()

        redis_server.start()  # empty: a Redis restarted without persistence
        await a.wait_store_ok()
        after = await a.post()
        recovered_metrics = await a.metrics()
        nursery.cancel_scope.cancel()
    assert before.status == 200
    assert [r.status for r in during] == [200] * 5  # no failed request
    assert health["store"] == "degraded"
    assert health["status"] == "ok"  # still serving: a load balancer must keep this instance
    assert gauge(metrics, "trioproxy_store_degraded") == 1
    assert gauge(metrics, "trioproxy_store_fallbacks_total") >= 4
    assert gauge(metrics, 'trioproxy_store_failures_total{reason="error"}') >= 1
    assert after.status == 200
    assert gauge(recovered_metrics, "trioproxy_store_degraded") == 0
    assert redis_server.command("EXISTS", "t22:{team}:r") == b":1"  # shared again


async def test_a_silent_redis_costs_a_request_at_most_store_timeout(
    redis_server: RedisServer, http: HTTPClient
) -> None:
    ini = _ini(redis_server.url, "rpm = 600")
    async with trio.open_nursery() as nursery:
        (a,) = await _instances(nursery, http, ini, 1)
        assert (await a.post()).status == 200
        redis_server.pause()  # connections stay open; nothing answers
        try:
            started = trio.current_time()
            first = await a.post()
            first_took = trio.current_time() - started
            started = trio.current_time()
            second = await a.post()  # degraded: skips the store entirely
            second_took = trio.current_time() - started
            health = await a.health()
        finally:
            redis_server.resume()
        await a.wait_store_ok()
        nursery.cancel_scope.cancel()
    assert first.status == 200
    assert second.status == 200
    assert health["store"] == "degraded"
    assert first_took < 0.05 + 0.5  # store_timeout 50 ms, plus a busy machine's slack
    assert second_took < first_took or second_took < 0.05


async def test_the_store_returns_the_local_limiters_429(redis_server: RedisServer) -> None:
    store = _store(redis_server)
    key = ClientKey("team", "sk", rpm=2)
    await store.admit(key)
    await store.admit(key)
    with pytest.raises(RateLimited) as info:
        await store.admit(key)
    # 2 per minute: a token every 30 s, and the bucket was full a moment ago.
    assert 29 <= int(dict(info.value.headers)["retry-after"]) <= 30
    assert "2 requests per minute" in info.value.message
    await store.aclose()


if TYPE_CHECKING:
    from trioproxy.store.redis import RedisStore


async def test_the_next_admission_carries_the_last_release(redis_server: RedisServer) -> None:
    # A release waits RELEASE_DELAY for the background task; the key's next request on this
    # instance deletes it in its own round trip, so back-to-back requests at max_concurrent = 1
    # are never refused by their own finished predecessor.
    store = _store(redis_server)
    key = ClientKey("team", "sk", max_concurrent=1)
    for _ in range(20):
        lease = await store.admit(key)
        store.release(key, lease)
    assert await poll_until(lambda: not redis_server.integer("EXISTS", "t22:{team}:c"), 5)
    await store.aclose()


# -- token-rate limits (tpm) ---------------------------------------------------------------------


async def test_a_debit_is_carried_by_the_keys_next_admission(redis_server: RedisServer) -> None:
    # The tokens a request used reach Redis with the key's next admission on this instance, in
    # its one round trip: the next request sees them at once, not after the background task.
    store = _store(redis_server)
    key = ClientKey("team", "sk", tpm=60)  # a token a second
    await store.admit(key)
    store.debit(key, 90)  # 30 below zero
    with pytest.raises(RateLimited) as info:
        await store.admit(key)
    assert 29 <= int(dict(info.value.headers)["retry-after"]) <= 31
    assert "60 tokens per minute" in info.value.message
    assert float(redis_server.command("HGET", "t22:{team}:t", "tokens")) < -29
    await store.aclose()


async def test_two_instances_on_one_redis_share_one_token_rate(
    redis_server: RedisServer, http: HTTPClient
) -> None:
    ini = _ini(redis_server.url, "tpm = 30")
    async with trio.open_nursery() as nursery:
        a, b = await _instances(nursery, http, ini, 2)
        first = await a.post(stream=False)
        used = json.loads(first.body)["usage"]["total_tokens"]
        # a's debit reaches Redis by a's background task (no next admission on a carries it).
        await poll_until(lambda: redis_server.command("EXISTS", "t22:{team}:t") == b":1", 5)
        refused = await b.post(stream=False)
        nursery.cancel_scope.cancel()
    assert first.status == 200
    assert used > 30
    assert refused.status == 429
    # 30 tokens a minute: above zero again after (used - 30) * 2 s, on either instance.
    assert abs(int(refused.headers["retry-after"]) - (used - 30) * 2) <= 2
    assert "token rate limit" in json.loads(refused.body)["error"]["message"]


async def test_tokens_used_while_redis_was_down_are_debited_when_it_is_back(
    redis_server: RedisServer, http: HTTPClient
) -> None:
    ini = _ini(redis_server.url, "tpm = 100000")
    async with trio.open_nursery() as nursery:
        (a,) = await _instances(nursery, http, ini, 1)
        redis_server.stop()
        during = await a.post(stream=False)  # admitted by the local limiter
        used = json.loads(during.body)["usage"]["total_tokens"]
        redis_server.start()  # empty
        await a.wait_store_ok()
        await poll_until(lambda: redis_server.command("EXISTS", "t22:{team}:t") == b":1", 5)
        nursery.cancel_scope.cancel()
    assert during.status == 200
    tokens = float(redis_server.command("HGET", "t22:{team}:t", "tokens"))
    assert 100000 - used - 1 <= tokens <= 100000 - used + 1
