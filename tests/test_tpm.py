"""Per-key token-rate limits (`[key:NAME] tpm`, issue 22), without Redis.

The bucket admits while it is above zero and is debited with what each request used when it
ends (the upstream's usage, or an estimate when the client left before it), so a key's tokens
per minute hold on average; the 429 says how long until the bucket is above zero again. The
shared (Redis) side of the same bucket is in tests/test_store_redis.py.
"""

from __future__ import annotations

import json
import math
from functools import partial
from typing import TYPE_CHECKING, Any

import openai
import pytest
import trio

from tests.conftest import config_from, on_server
from tests.lifecycle_support import (
    chat_body,
    chat_request,
    exchange,
    http_get,
    parse_responses,
)
from trioproxy.config.summary import describe
from trioproxy.config_types import ClientKey
from trioproxy.errors import ConfigError, RateLimited
from trioproxy.limits import KeyLimiter, tokens_used
from trioproxy.pump import tokens_spent
from trioproxy.record import Outcome, RequestRecord
from trioproxy.server import serve
from trioproxy.sse import SSEEvent
from trioproxy.translate.anthropic_response import openai_usage
from trioproxy.translate.relay import RelayWatch

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

KEY = "sk-tpm-0123456789abcdef"
BODY = {"model": "demo", "messages": [{"role": "user", "content": "x" * 400}]}


# -- the bucket (pure) ---------------------------------------------------------------------------


def test_a_key_is_admitted_while_its_token_bucket_is_above_zero() -> None:
    key = ClientKey("k", "sk", tpm=600)  # 10 tokens a second
    limiter = KeyLimiter()
    limiter.acquire(key, 0.0)
    limiter.release(key)
    limiter.debit(key, 599, 0.0)
    limiter.acquire(key, 0.0)  # one token left: admitted, whatever it will cost
    limiter.release(key)
    limiter.debit(key, 301, 0.0)  # 300 below zero: 30 s to refill above zero
    with pytest.raises(RateLimited) as info:
        limiter.acquire(key, 0.0)
    assert dict(info.value.headers)["retry-after"] == "30"
    assert "600 tokens per minute" in info.value.message
    with pytest.raises(RateLimited) as info:
        limiter.acquire(key, 20.0)  # 100 below zero
    assert dict(info.value.headers)["retry-after"] == "10"
    limiter.acquire(key, 30.1)


def test_the_token_bucket_never_holds_more_than_tpm() -> None:
    key = ClientKey("k", "sk", tpm=60)
    limiter = KeyLimiter()
    limiter.acquire(key, 0.0)
    limiter.release(key)
    limiter.debit(key, 60, 3600.0)  # an hour idle refills to 60, not to 3,600
    with pytest.raises(RateLimited):
        limiter.acquire(key, 3600.0)


def test_a_token_refusal_does_not_spend_a_request() -> None:
    key = ClientKey("k", "sk", tpm=60, rpm=1)
    limiter = KeyLimiter()
    limiter.acquire(key, 0.0)  # the one request of this minute
    limiter.release(key)
    limiter.debit(key, 120, 0.0)  # a minute below zero
    with pytest.raises(RateLimited, match="token rate limit"):
        limiter.acquire(key, 59.0)
    limiter.acquire(key, 61.0)  # both refilled: the token refusal took no request token


def test_a_debit_without_tpm_is_ignored() -> None:
    key = ClientKey("k", "sk", rpm=60)
    limiter = KeyLimiter()
    limiter.debit(key, 10**9, 0.0)
    limiter.acquire(key, 0.0)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}, 15),
        ({"prompt_tokens": 10, "completion_tokens": 5}, 15),
        ({"prompt_tokens": 10}, 10),
        ({"total_tokens": True, "prompt_tokens": 3}, 3),  # a bool is not a count
        ({"prompt_tokens": -4, "completion_tokens": "5"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_tokens_used_reads_the_usage(usage: dict[str, Any] | None, expected: int | None) -> None:
    assert tokens_used(usage) == expected


def test_a_relayed_anthropic_stream_is_metered_like_the_same_answer_translated() -> None:
    # Cache reads and writes are prompt tokens in OpenAI's count (translate/anthropic_response.py)
    # and are charged the same whichever way the answer went; message_delta's input_tokens of 0
    # does not undo message_start's count.
    watch = RelayWatch("anthropic")
    start = {
        "type": "message_start",
        "message": {
            "usage": {
                "input_tokens": 10,
                "cache_read_input_tokens": 1000,
                "cache_creation_input_tokens": 200,
                "output_tokens": 1,
            }
        },
    }
    delta = {"type": "message_delta", "usage": {"input_tokens": 0, "output_tokens": 40}}
    for payload in (start, delta):
        watch.feed(SSEEvent(event=payload["type"], data=json.dumps(payload)))
    assert watch.usage == {"prompt_tokens": 1210, "completion_tokens": 40, "total_tokens": 1250}
    assert tokens_used(watch.usage) == tokens_used(
        openai_usage({**start["message"]["usage"], "output_tokens": 40})
    )  # type: ignore[index]


def _record(**fields: Any) -> RequestRecord:
    record = RequestRecord(request_id="r", started=0.0)
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def test_tokens_spent_is_the_usage_when_it_came() -> None:
    record = _record(usage={"total_tokens": 42}, outcome=Outcome.COMPLETED, first_byte=1.0)
    assert tokens_spent(record, BODY) == 42


def test_a_stream_cut_short_is_charged_an_estimate() -> None:
    # The client left before the usage chunk: the prompt's estimate (400 characters, 4 per
    # token, 3 for the message) plus a token per chunk sent. Leaving early is no way around tpm.
    record = _record(outcome=Outcome.CLIENT_CANCELLED, first_byte=1.0, upstream="demo", chunks=7)
    assert tokens_spent(record, BODY) == 100 + 3 + 7


def test_a_request_cut_off_while_with_its_upstream_is_charged_its_prompt() -> None:
    record = _record(outcome=None, upstream="demo")  # cancelled before the first byte
    assert tokens_spent(record, BODY) == 103


@pytest.mark.parametrize("outcome", [Outcome.REJECTED, Outcome.UPSTREAM_ERROR])
def test_a_request_no_upstream_answered_costs_nothing(outcome: Outcome) -> None:
    assert tokens_spent(_record(outcome=outcome, upstream="demo"), BODY) == 0
    assert tokens_spent(_record(outcome=Outcome.CLIENT_CANCELLED), BODY) == 0  # no upstream yet


# -- configuration -------------------------------------------------------------------------------


def test_tpm_is_read_from_a_key_section_and_shown_in_the_summary() -> None:
    config = config_from(f"[key:team]\nkey = {KEY}\ntpm = 40000\nrpm = 60\n")
    (key,) = config.proxy.keys
    assert (key.tpm, key.rpm) == (40000, 60)
    assert "team (60/min; 40000 tokens/min)" in describe(config)


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "lots"])
def test_a_bad_tpm_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from(f"[key:team]\nkey = {KEY}\ntpm = {value}\n")
    assert "[key:team] tpm" in info.value.message


# -- end to end ----------------------------------------------------------------------------------


def _ini(tpm: int, *, delay: float = 0.0) -> str:
    return f"""
[proxy]
listen = 127.0.0.1:0

[key:team]
key = {KEY}
tpm = {tpm}

[upstream:demo]
type = demo
demo_delay = {delay}

[model:demo]
upstream = demo
"""


@pytest.fixture
async def proxy_url(server_kind: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    tpm, delay = getattr(request, "param", (30, 0.0))
    config = config_from(on_server(_ini(tpm, delay=delay), server_kind))
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, config))
        yield urls[0]
        nursery.cancel_scope.cancel()


async def test_the_openai_sdk_gets_a_429_with_retry_after_once_the_tokens_are_spent(
    proxy_url: str,
) -> None:
    def run() -> tuple[Any, openai.RateLimitError]:
        client = openai.OpenAI(base_url=proxy_url + "/v1", api_key=KEY, max_retries=0)
        with client:
            first = client.chat.completions.create(
                model="demo", messages=[{"role": "user", "content": "hi"}]
            )
            try:
                client.chat.completions.create(
                    model="demo", messages=[{"role": "user", "content": "hi"}]
                )
            except openai.RateLimitError as exc:
                return first, exc
        raise AssertionError("the second request was admitted")

    first, refused = await trio.to_thread.run_sync(run)
    used = first.usage.total_tokens
    assert used > 30  # the demo answer costs more than the bucket holds: it ends below zero
    # 30 tokens a minute, one every 2 s: above zero again after (used - 30) * 2 s.
    wait = int(refused.response.headers["retry-after"])
    assert math.ceil((used - 30) * 2) - 2 <= wait <= math.ceil((used - 30) * 2) + 1
    assert refused.code == "rate_limit_exceeded"
    assert "30 tokens per minute" in refused.message


@pytest.mark.parametrize("proxy_url", [(30, 0.05)], indirect=True)
async def test_a_client_that_leaves_mid_stream_is_still_charged(proxy_url: str) -> None:
    port = int(proxy_url.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(chat_request(chat_body("x" * 200), key=KEY))
    got = b""
    with trio.fail_after(10):
        while b"data:" not in got:  # the answer has begun; leave before its usage
            got += await stream.receive_some()
    await stream.aclose()
    # The request's end is counted once the proxy has seen the client go; then its charge is in.
    cancelled = 'outcome="client_cancelled"'
    with trio.fail_after(10):
        while cancelled not in (await http_get(port, "/metrics")).body.decode():  # noqa: ASYNC110
            await trio.sleep(0.02)
    closing = chat_request(chat_body(stream=False), key=KEY, extra="Connection: close\r\n")
    reply = await exchange(port, closing, 10)
    (response,) = parse_responses(reply.data, eof=reply.closed)
    assert response.status == 429
    # The estimate alone (200 characters: 50 + 3 tokens, and a chunk or more) puts 30 tokens a
    # minute more than 23 tokens, 46 s, below zero.
    assert int(response.headers["retry-after"]) >= 46
