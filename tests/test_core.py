"""Small pure modules: framing, auth, routing, limits, the demo reply, the accumulator."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DEMO_INI, config_from
from tests.support import sdk_final
from trioproxy import framing
from trioproxy.auth import ANONYMOUS, Authenticator, key_from_headers
from trioproxy.config_types import ClientKey
from trioproxy.errors import (
    AuthError,
    PermissionDenied,
    RateLimited,
    UnknownModel,
    UpstreamStatusError,
    UpstreamUnavailable,
)
from trioproxy.limits import KeyLimiter
from trioproxy.routing import Router
from trioproxy.translate.accumulate import CompletionAccumulator
from trioproxy.translate.base import StreamMeta
from trioproxy.translate.demo import PASSAGE, DemoReply

META = StreamMeta(completion_id="chatcmpl-test", created=1, model="demo", include_usage=True)


def test_sse_event_is_one_data_line_and_done_is_exact() -> None:
    frame = framing.sse_event({"text": "a\nb\u2028c°"})
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    assert frame.count(b"\n") == 2
    assert json.loads(frame[6:]) == {"text": "a\nb\u2028c°"}
    assert framing.DONE == b"data: [DONE]\n\n"
    assert framing.KEEPALIVE.startswith(b":")


def test_error_body_always_has_the_four_keys() -> None:
    body = framing.error_body(
        UpstreamStatusError("Overloaded", upstream_status=529, error_type="overloaded_error")
    )
    assert body == {
        "error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": None}
    }


def test_retry_after_prefers_milliseconds() -> None:
    exc = UpstreamStatusError(
        "x", upstream_status=429, headers=(("retry-after", "3"), ("retry-after-ms", "250"))
    )
    assert exc.retry_after == 0.25
    assert exc.retryable
    assert not UpstreamStatusError("x", upstream_status=400).retryable


def test_auth_accepts_bearer_and_x_api_key_and_names_the_caller() -> None:
    auth = Authenticator([ClientKey("alice", "sk-a"), ClientKey("bob", "sk-b")])
    assert auth.authenticate("sk-b").name == "bob"
    assert key_from_headers([(b"authorization", b"Bearer sk-a")]) == "sk-a"
    assert key_from_headers([(b"x-api-key", b"sk-b")]) == "sk-b"
    assert key_from_headers([(b"authorization", b"Basic xyz")]) is None
    with pytest.raises(AuthError) as info:
        auth.authenticate("sk-wrong-and-secret")
    assert "sk-wrong" not in str(info.value)
    with pytest.raises(AuthError):
        auth.authenticate(None)
    assert Authenticator([]).authenticate(None) is ANONYMOUS


def test_routing_exact_then_patterns_and_disabled_upstreams() -> None:
    ini = (
        DEMO_INI
        + """
[upstream:claude]
type = anthropic
api_key = ${ANTHROPIC_API_KEY:-}

[model:claude-*]
upstream = claude

[model:both]
upstream = claude, demo
"""
    )
    router = Router(config_from(ini))
    assert router.route("demo").candidates[0].upstream.name == "demo"
    route = router.route("both")
    assert [c.upstream.name for c in route.candidates] == ["demo"]  # claude is disabled
    with pytest.raises(UpstreamUnavailable) as info:
        router.route("claude-3")
    assert "ANTHROPIC_API_KEY" in info.value.message
    with pytest.raises(UnknownModel):
        router.route("gpt-9")
    with pytest.raises(PermissionDenied):
        router.route("demo", ClientKey("k", "sk", models=("gpt-*",)))
    assert ("demo", "demo") in router.listed_models()


def test_limiter_rate_and_concurrency() -> None:
    key = ClientKey("k", "sk", max_concurrent=2, rpm=3)
    limiter = KeyLimiter()
    limiter.acquire(key, 0.0)
    limiter.acquire(key, 0.0)
    with pytest.raises(RateLimited):
        limiter.acquire(key, 0.0)  # two in flight
    limiter.release(key)
    limiter.acquire(key, 0.0)  # third token of three
    limiter.release(key)
    limiter.release(key)
    with pytest.raises(RateLimited) as info:
        limiter.acquire(key, 1.0)  # bucket empty: one token per 20 s
    assert dict(info.value.headers)["retry-after"] == "19"  # 0.95 tokens short at 1/20 s
    limiter.acquire(key, 21.0)


def test_demo_reply_is_deterministic_and_accumulates_in_the_openai_sdk() -> None:
    body = {"model": "demo", "messages": [{"role": "user", "content": "ping"}]}
    chunks = [c for batch in DemoReply(body, META).chunks() for c in batch]
    again = [c for batch in DemoReply(body, META).chunks() for c in batch]
    assert chunks == again
    final = sdk_final(chunks)
    assert final.choices[0].message.content == f"You said: ping\n\n{PASSAGE}"  # type: ignore[attr-defined]
    assert final.usage.completion_tokens == len(final.choices[0].message.content.split())  # type: ignore[attr-defined]


def test_demo_stop_sequence_and_forced_tool_and_reasoning() -> None:
    body = {"model": "demo", "messages": [{"role": "user", "content": "ping"}], "stop": ["demo"]}
    text = "".join(
        c["choices"][0]["delta"].get("content", "")
        for b in DemoReply(body, META).chunks()
        for c in b
        if c["choices"]
    )
    assert "demo" not in text and text.endswith("trioproxy ")
    tool_body = {
        "model": "demo",
        "messages": [{"role": "user", "content": "weather in Paris"}],
        "tools": [{"type": "function", "function": {"name": "get_weather"}}],
        "tool_choice": "required",
        "reasoning_effort": "low",
    }
    chunks = [c for b in DemoReply(tool_body, META).chunks() for c in b]
    final = sdk_final(chunks)
    message = final.choices[0].message  # type: ignore[attr-defined]
    assert final.choices[0].finish_reason == "tool_calls"  # type: ignore[attr-defined]
    assert message.tool_calls[0].function.name == "get_weather"
    assert json.loads(message.tool_calls[0].function.arguments) == {"input": "weather in Paris"}
    assert message.reasoning_content == "Thinking about it briefly."


def test_accumulator_builds_a_chat_completion() -> None:
    body = {"model": "demo", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 2}
    acc = CompletionAccumulator()
    for batch in DemoReply(body, META).chunks():
        for item in batch:
            acc.feed(item)
    result = acc.result()
    assert result["object"] == "chat.completion"
    assert result["choices"][0]["message"]["content"] == "You said: "
    assert result["choices"][0]["finish_reason"] == "length"
    assert result["usage"]["completion_tokens"] == 2
