"""ChatDialect (MAPPING.md G): the pass-through request, the model's defaults, the usage it always
asks for, and non-streaming bodies. Error pass-through is tested with the Responses dialect's
(tests/test_translate_responses.py), since both use `openai_common`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support import PROTOCOL
from trioproxy.errors import (
    ClientError,
    UntranslatableRequest,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from trioproxy.translate.base import Dialect, ModelDefaults, StreamMeta, Target
from trioproxy.translate.chat import ChatDialect

META = StreamMeta("chatcmpl-test", 1760000000, "client-model")
USER = [{"role": "user", "content": "Hi"}]


def build(body: dict[str, Any], target: Target | None = None) -> dict[str, Any]:
    request = ChatDialect().build_request(body, target or Target("up-model"))
    result: dict[str, Any] = json.loads(request.body)
    return result


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "client-model", "messages": USER, **fields}


def test_dialect_satisfies_the_protocol_with_bearer_auth() -> None:
    dialect: Dialect = ChatDialect()
    assert dialect.name == "openai-chat"
    assert dialect.auth_headers("k-1") == (("authorization", "Bearer k-1"),)


def test_body_passes_through_with_the_model_renamed() -> None:
    body = load_request("tools_stream")
    request = ChatDialect().build_request(body, Target("up-model"))
    assert (request.path, request.stream, request.headers) == ("/chat/completions", True, ())
    assert json.loads(request.body) == {**body, "model": "up-model"}


def load_request(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(
        (PROTOCOL / "openai_chat" / "requests" / f"{name}.json").read_text(encoding="utf-8")
    )
    return body


def test_unknown_and_provider_fields_pass_through_untouched() -> None:
    extra = {
        "seed": 7,
        "stop": ["END"],
        "logit_bias": {"50256": -100},
        "thinking": {"type": "enabled"},  # a provider extension
        "messages": [*USER, {"role": "assistant", "content": "x", "reasoning_content": "r"}],
    }
    out = build(chat(**extra))
    assert out == {"model": "up-model", **extra}


def test_input_body_is_not_modified() -> None:
    body = chat(stream=True, stream_options={"include_usage": False})
    before = json.dumps(body)
    build(body, Target("up", ModelDefaults(max_tokens=5, system_prompt="S")))
    assert json.dumps(body) == before


@pytest.mark.parametrize(
    ("options", "sent"),
    [
        (None, {"include_usage": True}),
        ({"include_usage": False}, {"include_usage": True}),
        ({"include_obfuscation": False}, {"include_obfuscation": False, "include_usage": True}),
    ],
)
def test_streaming_always_asks_the_upstream_for_usage(
    options: dict[str, Any] | None, sent: dict[str, Any]
) -> None:
    body = chat(stream=True) if options is None else chat(stream=True, stream_options=options)
    assert build(body)["stream_options"] == sent


def test_non_streaming_requests_do_not_get_stream_options() -> None:
    request = ChatDialect().build_request(chat(), Target("up"))
    assert not request.stream
    assert "stream_options" not in json.loads(request.body)


def test_bad_stream_options_is_a_client_error() -> None:
    with pytest.raises(ClientError) as info:
        build(chat(stream=True, stream_options="yes"))
    assert info.value.param == "stream_options"


def test_model_defaults_apply_only_where_the_client_gave_none() -> None:
    target = Target("up", ModelDefaults(max_tokens=500, reasoning_effort="low"))
    out = build(chat(), target)
    assert (out["max_tokens"], out["reasoning_effort"]) == (500, "low")
    out = build(chat(max_completion_tokens=50, reasoning_effort="high"), target)
    assert "max_tokens" not in out
    assert (out["max_completion_tokens"], out["reasoning_effort"]) == (50, "high")
    assert build(chat(max_tokens=20), target)["max_tokens"] == 20


def test_default_system_prompt_comes_first_before_the_clients_own() -> None:
    messages = [{"role": "system", "content": "Client rule."}, *USER]
    out = build(chat(messages=messages), Target("up", ModelDefaults(system_prompt="Proxy rule.")))
    assert out["messages"] == [{"role": "system", "content": "Proxy rule."}, *messages]


def test_n_greater_than_one_is_refused_and_n_one_accepted() -> None:
    with pytest.raises(UntranslatableRequest) as info:
        build(chat(n=3))
    assert (info.value.param, info.value.code, info.value.status) == (
        "n",
        "unsupported_parameter",
        400,
    )
    assert build(chat(n=1))["n"] == 1


def test_values_json_cannot_carry_are_client_errors() -> None:
    with pytest.raises(ClientError):
        build(chat(temperature=float("nan")))
    with pytest.raises(ClientError):
        build(chat(user="\ud800"))
    with pytest.raises(ClientError):
        build(chat(x=object()))


# --- non-streaming answers -------------------------------------------------------------------


def test_completion_passes_through_unchanged() -> None:
    completion = {
        "id": "chatcmpl-up",
        "object": "chat.completion",
        "created": 5,
        "model": "deepseek-reasoner",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "x", "reasoning_content": "r"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "x": 1},
        "system_fingerprint": "fp",
    }
    raw = json.dumps(completion).encode()
    assert ChatDialect().translate_response(raw, META) == completion


@pytest.mark.parametrize("raw", [b"", b"nope", b"[1]", b"null"])
def test_a_body_that_is_not_a_json_object_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        ChatDialect().translate_response(raw, META)


def test_an_error_body_with_a_2xx_status_is_an_upstream_error() -> None:
    raw = json.dumps({"error": {"message": "quota", "type": "insufficient_quota"}}).encode()
    with pytest.raises(UpstreamStatusError) as info:
        ChatDialect().translate_response(raw, META)
    assert (info.value.status, info.value.message, info.value.error_type) == (
        429,
        "quota",
        "insufficient_quota",
    )
