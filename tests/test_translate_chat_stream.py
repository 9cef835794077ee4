"""ChatStreamTranslator (MAPPING.md G): golden transcripts of OpenAI-compatible upstreams through
SSEDecoder + translator, fed whole, one byte at a time and in random splits; the openai SDK's own
stream accumulator as the compatibility check; and a fuzz property."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import DATA
from tests.test_translate_responses_stream import (
    assert_chunk_contract,
    expected,
    expected_name,
    replay,
    run_translator,
    sdk_final,
)
from trioproxy.errors import UpstreamProtocolError, UpstreamStatusError
from trioproxy.sse import SSEEvent
from trioproxy.translate.base import StreamMeta
from trioproxy.translate.chat import ChatDialect, ChatStreamTranslator

TRANSCRIPTS = DATA / "chat"
META = StreamMeta("chatcmpl-test", 1760000000, "client-model", include_usage=True)
NO_USAGE = StreamMeta("chatcmpl-test", 1760000000, "client-model")
NAMES = sorted(p.stem for p in TRANSCRIPTS.glob("*.sse"))


def transcript(name: str) -> bytes:
    return (TRANSCRIPTS / f"{name}.sse").read_bytes()


# --- golden transcripts ----------------------------------------------------------------------


def test_every_transcript_has_an_expectation() -> None:
    assert len(NAMES) >= 20
    for name in NAMES:
        assert (TRANSCRIPTS / f"{expected_name(name)}.expected.jsonl").exists(), name


@pytest.mark.parametrize("name", NAMES)
def test_transcript_whole_bytewise_and_split(name: str) -> None:
    assert replay(ChatDialect(), transcript(name)) == expected(TRANSCRIPTS, expected_name(name))


@pytest.mark.parametrize("name", NAMES)
def test_transcript_without_include_usage_drops_the_usage_chunk(name: str) -> None:
    # G: the proxy always asks the upstream for usage; a client that did not gets none.
    want = [c for c in expected(TRANSCRIPTS, expected_name(name)) if c.get("choices") != []]
    assert replay(ChatDialect(), transcript(name), NO_USAGE) == want


def test_crlf_transcript_really_is_crlf_framed() -> None:
    raw = transcript("openai_text_crlf")
    assert raw.count(b"\r\n") == transcript("openai_text").count(b"\n")


@pytest.mark.parametrize("name", NAMES)
def test_transcript_output_keeps_the_chunk_contract(name: str) -> None:
    chunks = expected(TRANSCRIPTS, expected_name(name))
    if "error" in chunks[-1]:
        chunks = chunks[:-1]
        assert not any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks)
        return
    assert_chunk_contract(chunks, include_usage=True)


# What openai-python's stream helper makes of each clean transcript: content, the provider's
# reasoning field, tool calls (id, name, arguments), finish_reason, usage total_tokens.
SDK_FINAL: dict[str, tuple[str | None, dict[str, str], list[tuple[str, str, str]], str, int]] = {
    "openai_text": ("Hello — wörld 🏓 line\u2028two", {}, [], "stop", 14),
    "openai_tool_calls": (
        None,
        {},
        [
            ("call_aaa", "get_weather", '{"city": "Reykjav\\u00edk"}'),
            ("call_bbb", "get_weather", '{"city": "Oslo"}'),
        ],
        "tool_calls",
        120,
    ),
    "deepseek_reasoning_content": (
        "Water boils at 100 °C.",
        {"reasoning_content": "Let me think about °C."},
        [],
        "stop",
        42,
    ),
    "openrouter_reasoning": ("Answer.", {"reasoning": "Thinking hard."}, [], "stop", 35),
    "usage_on_last_content_chunk": ("Hi there.", {}, [], "stop", 5),
    "usage_on_every_chunk": ("One two three", {}, [], "stop", 10),
    "missing_done": ("Short", {}, [], "stop", 5),
    "repeated_role_and_tool_ids": (
        "Calling.",
        {},
        [("call_q1", "search", '{"q":"trio"}')],
        "tool_calls",
        42,
    ),
    "tool_calls_without_index": (
        None,
        {},
        [("call_g1", "a", '{"x":1}'), ("call_g2", "b", '{"y":2}')],
        "tool_calls",
        0,
    ),
    "tool_calls_reusing_index": (
        "",
        {},
        [("call_m1", "a", "{}"), ("call_m2", "b", '{"z":3}')],
        "tool_calls",
        0,
    ),
    "event_lines": ("Named events", {}, [], "stop", 0),
    "error_null": ("Fine", {}, [], "stop", 0),
    "azure_content_filter": ("Azure says hi", {}, [], "stop", 0),
    "done_without_finish_reason": ("No finish reason", {}, [], "stop", 0),
    "content_after_finish": ("Early late", {}, [], "length", 0),
}


def test_every_clean_transcript_has_an_sdk_expectation() -> None:
    clean = {
        expected_name(n)
        for n in NAMES
        if "error" not in expected(TRANSCRIPTS, expected_name(n))[-1]
    }
    assert clean == set(SDK_FINAL)


@pytest.mark.parametrize("name", sorted(SDK_FINAL))
def test_openai_sdk_accumulates_each_transcript_without_doubling_anything(name: str) -> None:
    content, reasoning, calls, finish, total = SDK_FINAL[name]
    final = sdk_final(expected(TRANSCRIPTS, name))
    message = final.choices[0].message
    assert message.role == "assistant"  # not "assistantassistant" (H.7)
    assert message.content == content
    for key, text in reasoning.items():
        assert getattr(message, key) == text
    got = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []]
    assert got == calls  # ids and names not concatenated (H.7), indexes from 0 (H.8)
    assert final.choices[0].finish_reason == finish
    assert final.usage is not None and final.usage.total_tokens == total
    assert final.id == expected(TRANSCRIPTS, name)[0]["id"]


def test_openrouter_reasoning_details_accumulate_by_index() -> None:
    final = sdk_final(expected(TRANSCRIPTS, "openrouter_reasoning"))
    details = final.choices[0].message.reasoning_details
    assert [d["text"] for d in details] == ["Thinking hard."]


def test_provider_usage_keys_survive() -> None:
    usage = expected(TRANSCRIPTS, "deepseek_reasoning_content")[-1]["usage"]
    assert usage["prompt_cache_miss_tokens"] == 12
    assert expected(TRANSCRIPTS, "openrouter_reasoning")[-1]["usage"]["cost"] == 0.00012


# --- single behaviours -----------------------------------------------------------------------


def feed_all(payloads: list[Any], meta: StreamMeta = META) -> list[dict[str, Any]]:
    translator = ChatStreamTranslator(meta)
    out: list[dict[str, Any]] = []
    for payload in payloads:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        out += translator.feed(SSEEvent(data))
    return out + translator.finish()


def chunk(delta: dict[str, Any], finish: str | None = None, **top: Any) -> dict[str, Any]:
    return {"id": "up-1", "created": 5, "model": "up-model", **top,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip


def test_a_content_less_role_chunk_is_held_so_an_early_error_leaves_nothing_sent() -> None:
    translator = ChatStreamTranslator(META)
    assert translator.feed(SSEEvent(json.dumps(chunk({"role": "assistant", "content": ""})))) == []
    error = {"error": {"message": "overloaded", "type": "server_error", "code": None}}
    with pytest.raises(UpstreamStatusError) as info:
        translator.feed(SSEEvent(json.dumps(error)))
    assert (info.value.status, info.value.upstream_status, info.value.message) == (
        500,
        200,
        "overloaded",
    )
    assert info.value.retryable


def test_a_role_chunk_is_made_up_when_the_upstream_sends_none() -> None:
    out = feed_all([chunk({"content": "x"}), chunk({}, "stop"), "[DONE]"], NO_USAGE)
    assert out[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["id"] for c in out] == ["up-1"] * 3
    assert [c["created"] for c in out] == [5] * 3


def test_meta_values_are_used_when_the_upstream_names_no_id_created_or_model() -> None:
    bare = {"choices": [{"delta": {"content": "x"}, "finish_reason": "stop"}]}
    out = feed_all([bare, "[DONE]"])
    assert {(c["id"], c["created"], c["model"]) for c in out} == {
        ("chatcmpl-test", 1760000000, "client-model")
    }


def test_id_created_and_model_are_fixed_once_the_first_chunk_is_out() -> None:
    translator = ChatStreamTranslator(NO_USAGE)
    first = translator.feed(SSEEvent(json.dumps(chunk({"content": "a"}))))
    later = translator.feed(
        SSEEvent(json.dumps(chunk({"content": "b"}, id="up-2", created=9, model="m2")))
    )
    assert {(c["id"], c["created"], c["model"]) for c in first + later} == {("up-1", 5, "up-model")}


def test_usage_is_the_last_one_sent_and_known_for_metering() -> None:
    translator = ChatStreamTranslator(NO_USAGE)
    assert translator.usage is None
    translator.feed(SSEEvent(json.dumps(chunk({"content": "a"}, usage={"total_tokens": 1}))))
    translator.feed(SSEEvent(json.dumps(chunk({}, "stop", usage={"total_tokens": 2}))))
    assert translator.usage == {"total_tokens": 2}
    assert not translator.done
    assert translator.feed(SSEEvent("[DONE]"))[-1]["choices"][0]["finish_reason"] == "stop"
    assert translator.done
    assert translator.feed(SSEEvent(json.dumps(chunk({"content": "late"})))) == []
    assert translator.finish() == []


def test_finish_before_any_finish_reason_is_a_protocol_error() -> None:
    translator = ChatStreamTranslator(META)
    translator.feed(SSEEvent(json.dumps(chunk({"content": "a"}))))
    with pytest.raises(UpstreamProtocolError, match="finish_reason"):
        translator.finish()
    with pytest.raises(UpstreamProtocolError):
        ChatStreamTranslator(META).finish()


@pytest.mark.parametrize(
    "data",
    [
        "null",
        "42",
        "[]",
        "{",
        json.dumps({"choices": {}}),
        json.dumps({"choices": ["x"]}),
        json.dumps({"choices": [{"index": 1, "delta": {}}]}),
        json.dumps({"choices": [{"delta": "x"}]}),
        json.dumps({"choices": [{"delta": {"tool_calls": {}}}]}),
        json.dumps({"choices": [{"delta": {"tool_calls": ["x"]}}]}),
    ],
)
def test_malformed_chunks_are_protocol_errors(data: str) -> None:
    with pytest.raises(UpstreamProtocolError):
        ChatStreamTranslator(META).feed(SSEEvent(data))


@pytest.mark.parametrize(
    ("error", "status", "kind", "code"),
    [
        (
            {"message": "m", "type": "invalid_request_error", "code": "context_length_exceeded"},
            400,
            "invalid_request_error",
            "context_length_exceeded",
        ),
        ({"message": "m", "code": 429}, 429, "server_error", "429"),
        ({"message": "m", "type": "overloaded_error"}, 529, "overloaded_error", None),
        ({"message": "m", "type": "mystery"}, 502, "mystery", None),
        ("plain text error", 502, "server_error", None),
    ],
)
def test_error_chunks_keep_the_upstreams_fields_and_map_a_status(
    error: Any, status: int, kind: str, code: str | None
) -> None:
    with pytest.raises(UpstreamStatusError) as info:
        feed_all([{"error": error}])
    exc = info.value
    assert (exc.status, exc.error_type, exc.code, exc.upstream_status) == (status, kind, code, 200)


def test_tool_call_first_delta_gets_type_and_empty_arguments_when_missing() -> None:
    call = {"index": 0, "id": "c1", "function": {"name": "f"}}
    out = feed_all([chunk({"tool_calls": [call]}), chunk({}, "tool_calls"), "[DONE]"], NO_USAGE)
    assert out[1]["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
    ]


def test_done_without_finish_reason_after_tool_calls_finishes_with_tool_calls() -> None:
    call = {
        "index": 0,
        "id": "c1",
        "type": "function",
        "function": {"name": "f", "arguments": "{}"},
    }
    out = feed_all([chunk({"tool_calls": [call]}), "[DONE]"], NO_USAGE)
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_one_chunk_answer_is_split_into_role_content_and_finish() -> None:
    one = chunk({"role": "assistant", "content": "All"}, "stop", usage={"total_tokens": 3})
    out = feed_all([one, "[DONE]"])
    assert [(c["choices"] and c["choices"][0]["delta"], c["usage"]) for c in out] == [
        ({"role": "assistant", "content": "All"}, None),
        ({}, None),
        ([], {"total_tokens": 3}),
    ]


# --- fuzz: any chunk list gives contract chunks, or a ProxyError --------------------------------

_scalar = st.none() | st.booleans() | st.integers(-1, 2) | st.sampled_from(["", "x", "assistant"])
_call = st.fixed_dictionaries(
    {},
    optional={
        "index": st.integers(0, 2) | _scalar,
        "id": st.sampled_from(["c1", "c2", ""]) | st.none(),
        "type": st.sampled_from(["function"]) | st.none(),
        "function": st.fixed_dictionaries(
            {},
            optional={
                "name": st.sampled_from(["f", "g", ""]) | st.none(),
                "arguments": st.sampled_from(["", "{", "}", '"a"']) | st.none(),
            },
        )
        | _scalar,
    },
)
_delta = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["assistant"]) | _scalar,
        "content": st.sampled_from(["", "hi", "é"]) | st.none(),
        "reasoning_content": st.sampled_from(["", "r"]) | st.none(),
        "refusal": st.none(),
        "tool_calls": st.lists(_call, max_size=2) | st.none(),
    },
)
_choice = st.fixed_dictionaries(
    {"delta": _delta},
    optional={
        "index": st.sampled_from([0, None]),
        "finish_reason": st.sampled_from(["stop", "length", "tool_calls", "", None]),
        "logprobs": st.none(),
    },
)
_payload = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["up", ""]),
        "created": st.integers(-1, 9),
        "model": st.sampled_from(["m", ""]),
        "choices": st.lists(_choice, max_size=1) | _scalar,
        "usage": st.none() | st.fixed_dictionaries({"total_tokens": st.integers(0, 9)}),
        "error": st.none() | st.sampled_from([{"message": "boom"}, "boom", {"code": 429}]),
    },
)
# Well-formed chunks with tool calls, so that many generated streams get far enough to finish.
_valid = st.builds(
    lambda delta, finish: {"id": "up", "choices": [{"delta": delta, "finish_reason": finish}]},
    st.fixed_dictionaries(
        {},
        optional={
            "role": st.just("assistant"),
            "content": st.sampled_from(["", "hi"]),
            "tool_calls": st.lists(
                st.fixed_dictionaries(
                    {"index": st.integers(0, 2)},
                    optional={
                        "id": st.sampled_from(["c1", "c2"]),
                        "function": st.fixed_dictionaries(
                            {}, optional={"name": st.just("f"), "arguments": st.just("{}")}
                        ),
                    },
                ),
                max_size=2,
            ),
        },
    ),
    st.sampled_from([None, None, None, "stop", "tool_calls"]),
)
_event = st.builds(
    SSEEvent,
    data=(_valid | _valid | _payload).map(json.dumps)
    | st.sampled_from(["[DONE]", "null", "{", "", "7"]),
    event=st.sampled_from(["message", "message", "error"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_event, max_size=10), st.booleans())
def test_any_chunk_list_gives_contract_chunks_or_a_proxy_error(
    events: list[SSEEvent], include_usage: bool
) -> None:
    meta = StreamMeta("chatcmpl-test", 1760000000, "client-model", include_usage=include_usage)
    run_translator(ChatStreamTranslator(meta), events, meta)
