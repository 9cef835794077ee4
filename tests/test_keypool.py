"""Key pools end to end: fake upstreams that answer per key (they look at the key they receive),
through the ASGI face and through the real server with the official openai SDK as the client.
429 moves to another key at once, every key cooling is one 429 with the soonest retry-after, a
refused key is disabled and shown so, the circuit breaker opens and closes, streams keep their
key across a reload, and weights share the load."""

from __future__ import annotations

import json
import logging
from collections import Counter
from functools import partial
from typing import TYPE_CHECKING, Any

import openai
import pytest
import trio

from tests.conftest import ASGIClient, config_from, make_client
from tests.fakes import FakeUpstream, Reply, json_reply, sse_reply
from tests.support import PROTOCOL, assert_stream_contract, sse_payloads
from trioproxy.server import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from trioproxy.record import RequestRecord
    from trioproxy.service import Runtime
    from trioproxy.upstream import HTTPClient

STREAM = (PROTOCOL / "anthropic" / "stream_text.sse").read_bytes()
ANSWER = json.loads((PROTOCOL / "anthropic" / "nonstream_text.json").read_text())
HELLO = {"model": "claude", "messages": [{"role": "user", "content": "hi"}]}
ENV = {
    "KEY_A": "sk-ant-key-aaaaaaaaaaaaaaaa",
    "KEY_B": "sk-ant-key-bbbbbbbbbbbbbbbb",
    "KEY_C": "sk-ant-key-cccccccccccccccc",
}
A, B, C = ENV["KEY_A"], ENV["KEY_B"], ENV["KEY_C"]


def rate_limited(seconds: int) -> Reply:
    body = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    return json_reply(429, body, [("retry-after", str(seconds))])


def refused() -> Reply:
    body = {"type": "error", "error": {"type": "authentication_error", "message": "invalid key"}}
    return json_reply(401, body)


def overloaded() -> Reply:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    return json_reply(529, body)


def answer(body: dict[str, Any]) -> Reply:
    """A success: an event stream when the request asked for one, else the JSON message."""
    return sse_reply(STREAM, pieces=3) if body.get("stream") else json_reply(200, ANSWER)


class KeyedUpstream(FakeUpstream):
    """A fake Anthropic upstream whose reply depends on the key it receives (`x-api-key`)."""

    def __init__(self, reply: Callable[[str, dict[str, Any]], Reply]) -> None:
        super().__init__(Reply())
        self.reply = reply

    def _next_reply(self) -> Reply:
        seen = self.seen[-1]  # the request being answered: appended just before this call
        return self.reply(seen.headers.get("x-api-key", ""), seen.json())

    @property
    def keys(self) -> list[str]:
        return [seen.headers.get("x-api-key", "") for seen in self.seen]


def ini(*urls: str, keys: str = "${KEY_A}, ${KEY_B}", extra: str = "", model: str = "") -> str:
    settings = {"max_retries": "1", "retry_max_wait": "2"}
    for line in extra.splitlines():  # `extra` overrides the defaults above, key by key
        name, _, value = line.partition("=")
        settings[name.strip()] = value.strip()
    lines = "".join(f"{name} = {value}\n" for name, value in settings.items())
    sections = ["[proxy]\nlisten = 127.0.0.1:0\n"]
    for index, url in enumerate(urls):
        sections.append(
            f"[upstream:up{index}]\ntype = anthropic\nbase_url = {url}\napi_key = {keys}\n{lines}"
        )
    names = ", ".join(f"up{i}" for i in range(len(urls)))
    sections.append(f"[model:claude]\nupstream = {names}\nupstream_model = claude-x\n{model}")
    return "\n".join(sections)


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


async def client_for(
    nursery: trio.Nursery, http: HTTPClient, *fakes: FakeUpstream, **kw: str
) -> ASGIClient:
    urls = [await nursery.start(fake.serve) for fake in fakes]
    return make_client(config_from(ini(*urls, **kw), ENV), http)


def records(runtime: Runtime) -> list[RequestRecord]:
    out: list[RequestRecord] = []
    runtime.on_finish.append(out.append)
    return out


# --- through the real server, the openai SDK as the client ------------------------------------


async def sdk_server(nursery: trio.Nursery, fake: FakeUpstream, **kw: str) -> str:
    url = await nursery.start(fake.serve)
    bound = await nursery.start(partial(serve, config_from(ini(url, **kw), ENV)))
    return str(bound[0])


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


async def test_a_429_on_one_key_is_answered_by_another_at_once(nursery: trio.Nursery) -> None:
    fake = KeyedUpstream(lambda key, body: rate_limited(30) if key == A else answer(body))
    url = await sdk_server(nursery, fake)

    def run() -> tuple[Any, list[Any]]:
        with sdk(url) as client:
            completion = client.chat.completions.create(**HELLO)  # type: ignore[call-overload]
            chunks = list(client.chat.completions.create(**HELLO, stream=True))  # type: ignore[call-overload]
            return completion, chunks

    began = trio.current_time()
    completion, chunks = await trio.to_thread.run_sync(run)
    assert trio.current_time() - began < 1.5  # no wait for A's 30 s
    assert completion.choices[0].message.content
    assert sum(1 for c in chunks if c.choices and c.choices[0].finish_reason) == 1
    # The first request tried A (the first key of an idle pool), got 429 and moved to B at
    # once; the second went straight to B: A is cooling down.
    assert fake.keys == [A, B, B]


async def test_every_key_rate_limited_is_one_429_with_the_soonest_retry_after(
    nursery: trio.Nursery,
) -> None:
    fake = KeyedUpstream(lambda key, body: rate_limited(30 if key == A else 7))
    url = await sdk_server(nursery, fake)

    def run() -> list[openai.RateLimitError]:
        errors = []
        with sdk(url) as client:
            for _ in range(2):
                try:
                    client.chat.completions.create(**HELLO)  # type: ignore[call-overload]
                except openai.RateLimitError as exc:
                    errors.append(exc)
        return errors

    first, second = await trio.to_thread.run_sync(run)
    assert first.status_code == 429
    assert first.response.headers["retry-after"] == "7"  # B's, the sooner of 30 and 7
    assert sorted(fake.keys) == sorted([A, B])  # each key once
    # The next request finds every key cooling: no upstream call, a 429 saying when.
    assert second.status_code == 429
    assert second.response.headers["retry-after"] in ("6", "7")
    assert "cooling down" in second.message
    assert len(fake.seen) == 2


# --- through the ASGI face --------------------------------------------------------------------


async def test_a_refused_key_is_disabled_logged_once_and_shown_by_label(
    nursery: trio.Nursery, http_client: HTTPClient, caplog: pytest.LogCaptureFixture
) -> None:
    fake = KeyedUpstream(lambda key, body: refused() if key == A else answer(body))
    client = await client_for(nursery, http_client, fake)
    done = records(client.runtime)
    caplog.set_level(logging.INFO, logger="trioproxy")
    for _ in range(4):
        assert (await client.chat(HELLO)).status == 200
    assert fake.keys == [A, B, B, B, B]  # never again after its 401
    assert [r.upstream_key for r in done] == ["KEY_B"] * 4
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "key KEY_A was refused" in errors[0] and "disabled until the next reload" in errors[0]
    health = (await client.request("GET", "/health")).json()
    keys = health["upstreams"]["up0"]["keys"]
    assert [(k["label"], k["state"]) for k in keys] == [("KEY_A", "disabled"), ("KEY_B", "ready")]
    assert keys[0]["reason"] == "auth"
    metrics = (await client.request("GET", "/metrics")).body.decode()
    assert 'trioproxy_upstream_key_state{upstream="up0",key="KEY_A",state="disabled"} 1' in metrics
    assert (
        'trioproxy_upstream_key_requests_total{upstream="up0",key="KEY_A",result="auth"} 1'
        in metrics
    )
    everything = json.dumps(health) + metrics + " ".join(r.getMessage() for r in caplog.records)
    assert A not in everything and B not in everything
    # A reload re-enables it (the operator may have fixed the key): it is tried again.
    client.runtime.reload(client.runtime.service.config)
    assert (await client.chat(HELLO)).status == 200
    assert fake.keys[-2:] == [A, B]


async def test_every_key_refused_is_a_503_for_the_operator_not_a_401_for_the_client(
    nursery: trio.Nursery, http_client: HTTPClient
) -> None:
    fake = KeyedUpstream(lambda key, body: refused())
    client = await client_for(nursery, http_client, fake)
    first = await client.chat(HELLO)
    assert first.status == 503
    assert first.json()["error"]["code"] == "upstream_key_refused"
    second = await client.chat(HELLO)
    assert second.status == 503
    assert second.json()["error"]["code"] == "upstream_keys_disabled"
    assert len(fake.seen) == 2


async def test_a_quota_error_cools_the_key_for_long_and_the_request_moves_on(
    nursery: trio.Nursery, http_client: HTTPClient
) -> None:
    credit = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "Your credit balance is too low to access the Anthropic API. Please go "
            "to Plans & Billing to upgrade or purchase credits.",
        },
    }
    fake = KeyedUpstream(lambda key, body: json_reply(400, credit) if key == A else answer(body))
    client = await client_for(nursery, http_client, fake, extra="quota_cooldown = 1800\n")
    for _ in range(3):
        assert (await client.chat(HELLO)).status == 200
    assert fake.keys == [A, B, B, B]
    (key_a, _) = (await client.request("GET", "/health")).json()["upstreams"]["up0"]["keys"]
    assert key_a["state"] == "cooling" and key_a["reason"] == "quota"
    assert 1790 < key_a["ready_in"] <= 1800


async def test_the_breaker_opens_skips_the_upstream_then_one_probe_closes_it(
    nursery: trio.Nursery, http_client: HTTPClient
) -> None:
    healthy = False
    fake = KeyedUpstream(lambda key, body: answer(body) if healthy else overloaded())
    backup = KeyedUpstream(lambda key, body: answer(body))
    client = await client_for(
        nursery,
        http_client,
        fake,
        backup,
        extra="breaker_failures = 2\nbreaker_open = 0.5\nmax_retries = 0\n",
    )
    first = await client.chat(HELLO)  # up0: 529 -> up1 answers; 1 failure in a row
    second = await client.chat(HELLO)  # up0: 529 again -> the breaker opens
    assert (first.status, second.status) == (200, 200)
    assert len(fake.seen) == 2
    health = (await client.request("GET", "/health")).json()
    assert health["upstreams"]["up0"]["breaker"]["state"] == "open"
    began = trio.current_time()
    for _ in range(3):  # the router skips up0: no 529 paid, straight to up1
        assert (await client.chat(HELLO)).status == 200
    assert len(fake.seen) == 2
    assert len(backup.seen) == 5
    assert trio.current_time() - began < 0.5
    healthy = True
    await trio.sleep(0.5)
    assert (await client.chat(HELLO)).status == 200  # the probe
    assert len(fake.seen) == 3 and len(backup.seen) == 5
    health = (await client.request("GET", "/health")).json()
    assert health["upstreams"]["up0"]["breaker"] == {"state": "closed", "failures_in_a_row": 0}


async def test_an_open_breaker_on_the_only_upstream_is_a_503_with_retry_after(
    nursery: trio.Nursery, http_client: HTTPClient
) -> None:
    fake = KeyedUpstream(lambda key, body: overloaded())
    client = await client_for(
        nursery, http_client, fake, extra="breaker_failures = 2\nbreaker_open = 20\n"
    )
    assert (await client.chat(HELLO)).status == 529  # two tries (max_retries = 1): opens
    resp = await client.chat(HELLO)
    assert resp.status == 503
    assert resp.headers["retry-after"] == "20"
    assert "circuit breaker is open" in resp.json()["error"]["message"]
    assert len(fake.seen) == 2


async def test_a_stream_keeps_its_key_while_a_reload_removes_it(
    nursery: trio.Nursery, http_client: HTTPClient
) -> None:
    slow = sse_reply(STREAM, pieces=6, pause=0.05)
    fake = KeyedUpstream(lambda key, body: slow if body.get("stream") else json_reply(200, ANSWER))
    urls = [await nursery.start(fake.serve)]
    client = make_client(config_from(ini(*urls), ENV), http_client)
    done = records(client.runtime)
    results: list[Any] = []
    streamed_all = trio.Event()

    async def stream() -> None:
        results.append(await client.chat({**HELLO, "stream": True}))
        streamed_all.set()

    nursery.start_soon(stream)
    await fake.wait_requests(1)
    assert fake.keys == [A]  # the first stream holds A
    # While it streams: a second request takes B (A has one in flight), then a reload drops A
    # and adds C.
    assert (await client.chat(HELLO)).status == 200
    client.runtime.reload(config_from(ini(*urls, keys="${KEY_B}, ${KEY_C}"), ENV))
    for _ in range(4):
        assert (await client.chat(HELLO)).status == 200
    await streamed_all.wait()
    (streamed,) = results
    assert streamed.status == 200
    assert_stream_contract(sse_payloads(streamed.body), include_usage=False)
    assert fake.keys[:2] == [A, B]
    assert A not in fake.keys[2:]  # removed: no new request uses it
    assert set(fake.keys[2:]) == {B, C}
    assert done[-1].upstream_key == "KEY_A"  # the stream, the last to finish


async def test_a_reload_keeps_the_cool_down_of_a_key_that_stays(
    nursery: trio.Nursery, http_client: HTTPClient
) -> None:
    fake = KeyedUpstream(lambda key, body: rate_limited(60) if key == A else answer(body))
    urls = [await nursery.start(fake.serve)]
    client = make_client(config_from(ini(*urls, keys="${KEY_A}"), ENV), http_client)
    assert (await client.chat(HELLO)).status == 429
    client.runtime.reload(config_from(ini(*urls, keys="${KEY_C}, ${KEY_A}"), ENV))
    for _ in range(3):
        assert (await client.chat(HELLO)).status == 200
    assert fake.keys == [A, C, C, C]


async def test_key_weights_share_the_load(
    nursery: trio.Nursery, http_client: HTTPClient, tmp_path: Any
) -> None:
    fake = KeyedUpstream(lambda key, body: answer(body))
    url = await nursery.start(fake.serve)
    (tmp_path / "keys.txt").write_text(f"heavy {A} weight=3\nlight {B}\n")
    text = ini(url, keys="").replace("api_key = \n", "api_keys_file = keys.txt\n")
    from trioproxy.config import parse_config

    config = parse_config(text, ENV, files={"keys.txt": (tmp_path / "keys.txt").read_text()})
    client = make_client(config, http_client)
    for _ in range(40):
        assert (await client.chat(HELLO)).status == 200
    assert Counter(fake.keys) == {A: 30, B: 10}


async def test_strategy_weighted_spreads_a_model_over_its_upstreams(
    nursery: trio.Nursery, http_client: HTTPClient
) -> None:
    one = KeyedUpstream(lambda key, body: answer(body))
    two = KeyedUpstream(lambda key, body: answer(body))
    client = await client_for(
        nursery, http_client, one, two, model="strategy = weighted\nweights = 1, 1\n"
    )
    for _ in range(10):
        assert (await client.chat(HELLO)).status == 200
    assert (len(one.seen), len(two.seen)) == (5, 5)


async def test_an_ordered_model_keeps_its_failover_order(
    nursery: trio.Nursery, http_client: HTTPClient
) -> None:
    one = KeyedUpstream(lambda key, body: answer(body))
    two = KeyedUpstream(lambda key, body: answer(body))
    client = await client_for(nursery, http_client, one, two)
    for _ in range(4):
        assert (await client.chat(HELLO)).status == 200
    assert (len(one.seen), len(two.seen)) == (4, 0)
