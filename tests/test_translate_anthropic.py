"""AnthropicDialect: chat request -> Messages request (MAPPING.md A), non-streaming answers (B),
errors (F.1), and the shared tables (tables/*.json). The stream side is in
test_translate_anthropic_stream.py."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import PROTOCOL
from trioproxy.errors import (
    ClientError,
    UntranslatableRequest,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from trioproxy.framing import error_body
from trioproxy.translate.anthropic import AnthropicDialect
from trioproxy.translate.anthropic_request import sanitize_tool_id
from trioproxy.translate.anthropic_response import finish_reason, openai_usage, scrub
from trioproxy.translate.base import ModelDefaults, StreamMeta, Target, UpstreamRequest

DIALECT = AnthropicDialect()
TARGET = Target("proxy-test-model")
META = StreamMeta("chatcmpl-test", 1760000000, "client-model")
TABLES = PROTOCOL / "tables"
TOOL_ID = re.compile(r"[A-Za-z0-9_-]+")
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}
PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def load(path: str) -> Any:
    return json.loads((PROTOCOL / path).read_text(encoding="utf-8"))


def translate(body: dict[str, Any], target: Target = TARGET) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DIALECT.build_request(body, target).body)
    return result


def chat(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "proxy-test-model", "messages": list(messages), **fields}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


HELLO = user("Hello")


# --- the dialect's request envelope ------------------------------------------------------------


@pytest.mark.parametrize("name", ["text_stream", "tools_stream"])
def test_protocol_request_fixture_translates_exactly(name: str) -> None:
    body = load(f"openai_chat/requests/{name}.json")
    assert translate(body) == load(f"anthropic/requests/{name}.expected.json")


def test_auth_header_is_x_api_key_only() -> None:
    assert DIALECT.auth_headers("sk-ant-secret") == (("x-api-key", "sk-ant-secret"),)


def test_request_goes_to_v1_messages_with_version_and_json_headers() -> None:
    request = DIALECT.build_request(chat(HELLO), TARGET)
    assert request.path == "/v1/messages"
    assert request.headers == (
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
    )


def test_beta_features_are_sent_comma_joined() -> None:
    dialect = AnthropicDialect(version="2024-01-01", beta=("a-2025-01-01", "b-2025-02-02"))
    headers = dict(dialect.build_request(chat(HELLO), TARGET).headers)
    assert headers["anthropic-version"] == "2024-01-01"
    assert headers["anthropic-beta"] == "a-2025-01-01,b-2025-02-02"
    assert dialect.name == "anthropic"


@pytest.mark.parametrize(("stream", "expected"), [(True, True), (False, False), (None, False)])
def test_stream_flag_follows_the_body(stream: bool | None, expected: bool) -> None:
    body = chat(HELLO) if stream is None else chat(HELLO, stream=stream)
    request = DIALECT.build_request(body, TARGET)
    assert request.stream is expected
    assert ("stream" in json.loads(request.body)) is expected  # `false` is the same as absent


def test_upstream_model_comes_from_the_target() -> None:
    assert translate(chat(HELLO), Target("claude-opus-4"))["model"] == "claude-opus-4"


# --- A.1 top-level fields --------------------------------------------------------------------


def test_max_tokens_defaults_to_4096_then_the_models_default() -> None:
    assert translate(chat(HELLO))["max_tokens"] == 4096  # P-A2
    target = Target("m", ModelDefaults(max_tokens=777))
    assert translate(chat(HELLO), target)["max_tokens"] == 777
    assert translate(chat(HELLO, max_tokens=5), target)["max_tokens"] == 5


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert translate(chat(HELLO, max_tokens=10, max_completion_tokens=20))["max_tokens"] == 20


@pytest.mark.parametrize(
    ("max_tokens", "effort", "expected"),
    [(1024, "low", 2048), (1000, "medium", 3048), (8000, "high", 8000), (4096, "high", 8192)],
)
def test_max_tokens_is_raised_above_the_thinking_budget(
    max_tokens: int, effort: str, expected: int
) -> None:
    # P-A2 / A.3: budget_tokens must stay below max_tokens.
    out = translate(chat(HELLO, max_tokens=max_tokens, reasoning_effort=effort))
    assert out["max_tokens"] == expected
    assert out["thinking"]["budget_tokens"] < out["max_tokens"]


@pytest.mark.parametrize(
    ("effort", "expected"), list(load("tables/reasoning_effort.json")["anthropic_thinking"].items())
)
def test_reasoning_effort_table(effort: str, expected: dict[str, Any]) -> None:
    out = translate(chat(HELLO, reasoning_effort=effort))
    assert out["thinking"] == expected["thinking"]


def test_models_default_reasoning_effort_applies_unless_the_client_sets_one() -> None:
    target = Target("m", ModelDefaults(reasoning_effort="high"))
    assert translate(chat(HELLO), target)["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert translate(chat(HELLO, reasoning_effort="none"), target)["thinking"] == {
        "type": "disabled"
    }
    assert "thinking" not in translate(chat(HELLO))


def test_bad_default_reasoning_effort_is_a_client_error_not_a_crash() -> None:
    with pytest.raises(ClientError) as info:
        translate(chat(HELLO), Target("m", ModelDefaults(reasoning_effort="turbo")))
    assert info.value.param == "reasoning_effort"


def test_temperature_is_clamped_to_anthropics_range() -> None:
    assert translate(chat(HELLO, temperature=1.7))["temperature"] == 1.0  # P-A3
    assert translate(chat(HELLO, temperature=0))["temperature"] == 0


def test_thinking_drops_temperature_and_clamps_top_p() -> None:
    # P-A11: thinking is incompatible with temperature changes; top_p only in [0.95, 1].
    out = translate(chat(HELLO, temperature=0.2, top_p=0.5, reasoning_effort="low"))
    assert "temperature" not in out
    assert out["top_p"] == 0.95
    plain = translate(chat(HELLO, temperature=0.2, top_p=0.5))
    assert (plain["temperature"], plain["top_p"]) == (0.2, 0.5)  # P-A4: both forwarded


def test_thinking_disabled_keeps_temperature() -> None:
    assert translate(chat(HELLO, temperature=0.5, reasoning_effort="none"))["temperature"] == 0.5


@pytest.mark.parametrize(
    ("stop", "expected"), [("END", ["END"]), (["a", "b"], ["a", "b"]), (None, None), ([], None)]
)
def test_stop_becomes_stop_sequences(stop: Any, expected: list[str] | None) -> None:
    assert translate(chat(HELLO, stop=stop)).get("stop_sequences") == expected


def test_user_becomes_metadata_user_id() -> None:
    assert translate(chat(HELLO, user="u-42"))["metadata"] == {"user_id": "u-42"}


def test_n_greater_than_one_is_refused_and_n_one_accepted() -> None:
    with pytest.raises(UntranslatableRequest) as info:
        translate(chat(HELLO, n=2))
    assert (info.value.status, info.value.param, info.value.code) == (
        400,
        "n",
        "unsupported_parameter",
    )
    assert "n" not in translate(chat(HELLO, n=1))


@pytest.mark.parametrize(
    ("field", "value"),
    [("logprobs", True), ("modalities", ["text", "audio"]), ("audio", {"voice": "alloy"})],
)
def test_logprobs_and_audio_output_are_refused(field: str, value: Any) -> None:
    with pytest.raises(UntranslatableRequest) as info:
        translate(chat(HELLO, **{field: value}))
    assert info.value.param == field
    assert info.value.status == 400


def test_dropped_fields_do_not_reach_the_upstream() -> None:
    # P-A7 / P-A8, and stream_options which only steers the proxy's usage chunk (C.4).
    body = chat(
        HELLO,
        seed=1,
        frequency_penalty=0.5,
        presence_penalty=0.5,
        logit_bias={"1": 2},
        logprobs=False,
        top_logprobs=2,
        prediction={"type": "content", "content": "x"},
        web_search_options={},
        verbosity="low",
        store=True,
        metadata={"k": "v"},
        service_tier="auto",
        stream_options={"include_usage": True},
        modalities=["text"],
        some_future_field=True,
    )
    assert translate(body) == {
        "model": "proxy-test-model",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "Hello"}],
    }


def test_json_schema_response_format_becomes_output_config() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = chat(
        HELLO,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": schema, "strict": True},
        },
    )
    assert translate(body)["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


def test_json_object_response_format_is_refused_with_a_hint_when_json_mode_is_off() -> None:
    # The other json_mode values: tests/test_json_mode.py.
    off = Target("claude-sonnet-4-5", ModelDefaults(json_mode="off"))
    with pytest.raises(UntranslatableRequest) as info:
        translate(chat(HELLO, response_format={"type": "json_object"}), off)
    assert info.value.param == "response_format"
    assert "json_schema" in info.value.message


def test_text_response_format_is_dropped() -> None:
    assert "output_config" not in translate(chat(HELLO, response_format={"type": "text"}))


def test_json_schema_without_schema_names_the_field() -> None:
    with pytest.raises(ClientError) as info:
        translate(chat(HELLO, response_format={"type": "json_schema", "json_schema": {}}))
    assert info.value.param == "response_format.json_schema.schema"


# --- tools ---------------------------------------------------------------------------------


@pytest.mark.parametrize("row", load("tables/tool_choice.json"), ids=lambda row: str(row["openai"]))
def test_tool_choice_table(row: dict[str, Any]) -> None:
    out = translate(chat(HELLO, tools=[WEATHER_TOOL], **row["openai"]))
    assert out["tool_choice"] == row["anthropic"]["tool_choice"]


def test_tool_without_parameters_gets_an_empty_object_schema_and_strict_is_dropped() -> None:
    tool = {"type": "function", "function": {"name": "now", "strict": True}}
    assert translate(chat(HELLO, tools=[tool]))["tools"] == [
        {"name": "now", "input_schema": {"type": "object", "properties": {}}}
    ]


def test_tool_choice_and_parallel_tool_calls_without_tools_are_dropped() -> None:
    out = translate(chat(HELLO, tool_choice="auto", parallel_tool_calls=False))
    assert "tool_choice" not in out
    assert "tools" not in out


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_thinking_downgrades_forced_tool_choice_to_auto(choice: Any) -> None:
    # P-A11: "Thinking may not be enabled when tool_choice forces tool use" [S25].
    out = translate(
        chat(
            HELLO,
            tools=[WEATHER_TOOL],
            tool_choice=choice,
            parallel_tool_calls=False,
            reasoning_effort="medium",
        )
    )
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


# --- A.2 messages ----------------------------------------------------------------------------


def test_system_and_developer_messages_are_hoisted_in_order_after_the_default_prompt() -> None:
    body = chat(
        {"role": "system", "content": "one"},
        HELLO,
        {"role": "developer", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "Hi"},
        {"role": "system", "content": "three"},
        user("Bye"),
    )
    out = translate(body, Target("m", ModelDefaults(system_prompt="default")))
    assert out["system"] == [
        {"type": "text", "text": "default"},
        {"type": "text", "text": "one"},
        {"type": "text", "text": "two"},
        {"type": "text", "text": "three"},
    ]
    assert out["messages"] == [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": "Bye"},
    ]


def test_a_single_system_block_is_sent_as_a_string() -> None:
    out = translate(chat(HELLO), Target("m", ModelDefaults(system_prompt="Be brief.")))
    assert out["system"] == "Be brief."


def test_only_system_messages_is_a_client_error() -> None:
    with pytest.raises(ClientError) as info:
        translate(chat({"role": "system", "content": "x"}))
    assert info.value.param == "messages"


def test_non_text_system_part_names_the_part() -> None:
    body = chat({"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]})
    with pytest.raises(ClientError) as info:
        translate(body)
    assert info.value.param == "messages[0].content[0]"


def test_user_parts_become_text_and_image_blocks_and_detail_is_dropped() -> None:
    content = [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg", "detail": "high"}},
        {"type": "text", "text": ""},
    ]
    assert translate(chat(user(content)))["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
    ]


@pytest.mark.parametrize(
    "url",
    [
        f"data:image/bmp;base64,{PNG}",  # not one of jpeg/png/gif/webp
        "data:image/png,rawbytes",  # no ;base64
        "data:image/png;base64",  # no comma
        "ftp://example.com/a.png",
        "not a url",
    ],
)
def test_bad_image_urls_are_refused_naming_the_part(url: str) -> None:
    content = [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": url}}]
    with pytest.raises(ClientError) as info:
        translate(chat(HELLO, {"role": "assistant", "content": "ok"}, user(content)))
    assert info.value.param == "messages[2].content[1].image_url.url"
    assert info.value.status == 400


def test_image_media_type_case_is_normalised() -> None:
    part = {"type": "image_url", "image_url": {"url": f"DATA:Image/JPEG;Base64,{PNG}"}}
    block = translate(chat(user([part])))["messages"][0]["content"][0]
    assert block["source"]["media_type"] == "image/jpeg"


def test_pdf_file_part_becomes_a_document_block() -> None:
    part = {
        "type": "file",
        "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
    }
    assert translate(chat(user([part])))["messages"][0]["content"] == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
        }
    ]


@pytest.mark.parametrize(
    ("file", "param"),
    [
        ({"file_id": "file-abc"}, "messages[0].content[0].file.file_id"),
        ({"file_data": "data:text/csv;base64,YSxi"}, "messages[0].content[0].file.file_data"),
        ({"file_data": "JVBERi0="}, "messages[0].content[0].file.file_data"),
    ],
)
def test_unusable_file_parts_are_refused(file: dict[str, Any], param: str) -> None:
    with pytest.raises(ClientError) as info:
        translate(chat(user([{"type": "file", "file": file}])))
    assert info.value.param == param


def test_input_audio_is_refused() -> None:
    part = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    with pytest.raises(UntranslatableRequest) as info:
        translate(chat(user([part])))
    assert info.value.param == "messages[0].content[0]"


def test_assistant_tool_calls_become_tool_use_after_the_text() -> None:
    assistant = {
        "role": "assistant",
        "content": [{"type": "text", "text": "Checking."}, {"type": "refusal", "refusal": "no"}],
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            },
            {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}},
        ],
    }
    out = translate(
        chat(HELLO, assistant, {"role": "tool", "tool_call_id": "call_1", "content": "4"})
    )
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
        ],
    }


@pytest.mark.parametrize(
    "arguments", ["{not json", "[1, 2]", '"a string"', "1e999999", "[" * 50000]
)
def test_tool_arguments_that_are_not_a_json_object_are_refused(arguments: str) -> None:
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
        ],
    }
    with pytest.raises(ClientError) as info:
        translate(chat(HELLO, assistant, {"role": "tool", "tool_call_id": "c", "content": "x"}))
    assert info.value.param == "messages[1].tool_calls[0].function.arguments"


def test_roundtrip_tool_results_merge_into_one_user_turn_results_first() -> None:
    # A.2.4 / A.2.6 / H.22: consecutive tool messages and the next user message make one turn.
    body = chat(
        user("Weather in Oslo and Bergen?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "w", "arguments": "{}"}},
                {"id": "call_b", "type": "function", "function": {"name": "w", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "4 °C"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "9 °C"}]},
        user("And tomorrow?"),
    )
    assert translate(body)["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_a", "content": "4 °C"},
            {
                "type": "tool_result",
                "tool_use_id": "call_b",
                "content": [{"type": "text", "text": "9 °C"}],
            },
            {"type": "text", "text": "And tomorrow?"},
        ],
    }


def test_tool_result_after_user_text_is_moved_first() -> None:
    body = chat(user("a"), {"role": "tool", "tool_call_id": "c1", "content": ""})
    assert translate(body)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1"},
                {"type": "text", "text": "a"},
            ],
        }
    ]


def test_empty_messages_are_dropped_and_their_neighbours_merged() -> None:
    # A.2.5: empty text blocks and then empty messages go; the users around them merge (A.2.6).
    body = chat(
        user("one"),
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": None},
        user([{"type": "text", "text": ""}, {"type": "text", "text": "two"}]),
        {"role": "assistant", "content": [{"type": "text", "text": ""}]},
    )
    assert translate(body)["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        }
    ]


def test_final_assistant_message_is_a_prefill() -> None:
    out = translate(chat(HELLO, {"role": "assistant", "content": "The answer is"}))
    assert out["messages"][-1] == {"role": "assistant", "content": "The answer is"}


def test_prefill_with_thinking_is_refused() -> None:
    # P-A10: extended thinking does not allow a prefill [S12].
    body = chat(HELLO, {"role": "assistant", "content": "The answer is"}, reasoning_effort="low")
    with pytest.raises(UntranslatableRequest) as info:
        translate(body)
    assert info.value.param == "messages[1]"
    assert "prefill" in info.value.message


def test_prefill_with_the_models_default_thinking_is_refused_too() -> None:
    body = chat(HELLO, {"role": "assistant", "content": "The answer is"})
    with pytest.raises(UntranslatableRequest):
        translate(body, Target("m", ModelDefaults(reasoning_effort="high")))


def test_foreign_tool_ids_are_rewritten_identically_in_tool_use_and_tool_result() -> None:
    # A.2.8: ids must match ^[a-zA-Z0-9_-]+$ [S20].
    ids = ["functions.get_weather:0", "functions.get_weather:1", "call|x"]
    body = chat(
        HELLO,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": i, "type": "function", "function": {"name": "f", "arguments": "{}"}}
                for i in ids
            ],
        },
        *({"role": "tool", "tool_call_id": i, "content": "ok"} for i in ids),
    )
    out = translate(body)
    uses = [b["id"] for b in out["messages"][1]["content"]]
    results = [b["tool_use_id"] for b in out["messages"][2]["content"]]
    assert uses == results
    assert len(set(uses)) == len(ids)
    assert all(TOOL_ID.fullmatch(i) for i in uses)
    assert translate(body) == out  # deterministic


@given(st.text(max_size=40))
def test_sanitized_tool_ids_always_match_anthropics_pattern(tool_id: str) -> None:
    clean = sanitize_tool_id(tool_id)
    assert TOOL_ID.fullmatch(clean)
    assert clean == sanitize_tool_id(tool_id)
    if TOOL_ID.fullmatch(tool_id):
        assert clean == tool_id


def test_thinking_blocks_are_replayed_before_the_text() -> None:
    # A.2.3: LiteLLM's thinking_blocks, as the non-streaming answer (and the stream) gives them;
    # an accumulator's extra `index` is ignored and an unsigned block cannot be replayed.
    assistant = {
        "role": "assistant",
        "content": "It is 4 °C.",
        "reasoning_content": "dropped: no signature",
        "thinking_blocks": [
            {"type": "thinking", "thinking": "Call the tool.", "signature": "sig-1", "index": 0},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "thinking", "thinking": "unsigned", "signature": ""},
        ],
    }
    out = translate(chat(HELLO, assistant, user("Thanks")))
    assert out["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "Call the tool.", "signature": "sig-1"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "It is 4 °C."},
    ]


@pytest.mark.parametrize(
    "entry", [{"type": "thinking"}, {"type": "redacted_thinking"}, {"type": "other"}, "text"]
)
def test_malformed_thinking_blocks_are_refused(entry: Any) -> None:
    assistant = {"role": "assistant", "content": "x", "thinking_blocks": [entry]}
    with pytest.raises(ClientError) as info:
        translate(chat(HELLO, assistant, user("y")))
    assert info.value.param is not None
    assert info.value.param.startswith("messages[1].thinking_blocks[0]")


def test_non_finite_numbers_are_a_client_error() -> None:
    with pytest.raises(ClientError):
        translate(chat(HELLO, top_p=float("nan")))


# --- property: valid-looking bodies give a request or a ClientError, never a crash -----------

_text = st.text(max_size=12)
_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _text)
_junk = st.recursive(
    _json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)),
    max_leaves=6,
)
_url = st.one_of(
    st.sampled_from(
        [
            f"data:image/png;base64,{PNG}",
            "data:image/svg+xml;base64,PHN2Zz4=",
            "data:image/png,abc",
            "https://example.com/cat.webp",
            "http://x",
        ]
    ),
    _text,
)
_text_part = st.fixed_dictionaries({"type": st.just("text"), "text": _text})
_part = st.one_of(
    _text_part,
    st.fixed_dictionaries(
        {"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": _url})},
        optional={"detail": st.sampled_from(["auto", "low", "high"])},
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["file", "input_audio", "refusal", "future"])},
        optional={"file": _junk, "refusal": _text},
    ),
)
_content = st.one_of(_text, st.lists(_part, max_size=3), st.lists(_text_part, max_size=3))
_arguments = st.one_of(
    st.just(""), _text, st.dictionaries(_text, _json_scalar, max_size=3).map(json.dumps)
)
_tool_call = st.fixed_dictionaries(
    {
        "id": _text,
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": _text, "arguments": _arguments}),
    }
)
_thinking_block = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("thinking"), "thinking": _text, "signature": _text},
        optional={"index": st.integers(0, 3)},
    ),
    st.fixed_dictionaries({"type": st.just("redacted_thinking"), "data": _text}),
    _junk,
)
_message = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "developer", "user"]), "content": _content}
    ),
    st.fixed_dictionaries(
        {"role": st.just("assistant"), "content": st.one_of(st.none(), _content)},
        optional={
            "tool_calls": st.lists(_tool_call, max_size=2),
            "thinking_blocks": st.lists(_thinking_block, max_size=2),
            "reasoning_content": _text,
        },
    ),
    st.fixed_dictionaries({"role": st.just("tool"), "tool_call_id": _text, "content": _content}),
)
_tool = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": _text},
            optional={
                "description": _text,
                "parameters": st.just({"type": "object", "properties": {}}),
                "strict": st.booleans(),
            },
        ),
    }
)
_body = st.fixed_dictionaries(
    {
        "model": st.text(min_size=1, max_size=8),
        "messages": st.lists(_message, min_size=1, max_size=6),
    },
    optional={
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
        "max_tokens": st.integers(1, 100_000),
        "max_completion_tokens": st.integers(1, 100_000),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "n": st.sampled_from([1, 1, 1, 2]),
        "stop": st.one_of(st.none(), _text, st.lists(_text, max_size=4)),
        "tools": st.lists(_tool, max_size=2),
        "tool_choice": st.one_of(
            st.sampled_from(["none", "auto", "required"]),
            st.builds(lambda n: {"type": "function", "function": {"name": n}}, _text),
        ),
        "parallel_tool_calls": st.booleans(),
        "reasoning_effort": st.sampled_from(
            ["none", "minimal", "low", "medium", "high", "xhigh", "max"]
        ),
        "user": _text,
        "response_format": st.one_of(
            st.sampled_from([{"type": "text"}, {"type": "json_object"}, {"type": "weird"}]),
            st.builds(
                lambda s: {"type": "json_schema", "json_schema": {"name": "x", "schema": s}},
                st.one_of(st.just({"type": "object"}), _junk),
            ),
        ),
        "logprobs": st.sampled_from([False, False, False, True]),
        "seed": st.integers(),
        "modalities": st.lists(st.sampled_from(["text", "audio"]), max_size=2),
    },
)
_target = st.builds(
    Target,
    st.text(min_size=1, max_size=8),
    st.builds(
        ModelDefaults,
        st.one_of(st.none(), st.integers(1, 10_000)),
        st.one_of(st.none(), st.sampled_from(["none", "low", "max"])),
        st.one_of(st.none(), _text),
        st.sampled_from(["tool", "instruction", "off"]),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_body, _target)
def test_any_valid_looking_request_translates_or_raises_client_error(
    body: dict[str, Any], target: Target
) -> None:
    try:
        request = DIALECT.build_request(body, target)
    except ClientError as exc:
        error: ClientError | None = exc
    else:
        error = None
    if error is not None:
        assert error.status == 400
        assert error.message
        return
    assert isinstance(request, UpstreamRequest)
    out = json.loads(request.body)
    assert out["model"] == target.upstream_model
    thinking = out.get("thinking", {})
    if thinking.get("type") == "enabled":
        assert 1024 <= thinking["budget_tokens"] < out["max_tokens"]
        assert "temperature" not in out
        assert out.get("tool_choice", {}).get("type") not in ("any", "tool")
        assert out["messages"][-1]["role"] == "user"
    assert out.get("temperature", 0) <= 1
    roles = [m["role"] for m in out["messages"]]
    assert roles and all(a != b for a, b in itertools.pairwise(roles))
    for message in out["messages"]:
        content = message["content"]
        assert content  # no empty messages (A.2.5)
        for block in [] if isinstance(content, str) else content:
            assert block.get("text", "x") != ""  # no empty text blocks
            if block["type"] == "tool_use":
                assert TOOL_ID.fullmatch(block["id"])
            if block["type"] == "tool_result":
                assert TOOL_ID.fullmatch(block["tool_use_id"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_text, _junk, max_size=6), st.lists(_junk, max_size=4))
def test_junk_bodies_raise_client_error_never_anything_else(
    body: dict[str, Any], messages: list[Any]
) -> None:
    for candidate in (
        body,
        {**body, "messages": messages},
        {**body, "messages": [{"role": "user", "content": messages}]},
    ):
        with contextlib.suppress(ClientError):
            DIALECT.build_request(candidate, TARGET)


# Valid rich bodies with a few mutations (keys dropped, values replaced by junk): reaches the
# checks deep inside messages that random dictionaries rarely build.
_RICH = [
    load("openai_chat/requests/tools_stream.json"),
    chat(
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        user(
            [
                {"type": "text", "text": "Look"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}},
            ]
        ),
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Checking."}],
            "thinking_blocks": [
                {"type": "thinking", "thinking": "t", "signature": "s"},
                {"type": "redacted_thinking", "data": "d"},
            ],
            "tool_calls": [
                {"id": "a.b", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "a.b", "content": [{"type": "text", "text": "ok"}]},
        user("Thanks"),
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        reasoning_effort="low",
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        stop=["x"],
        temperature=0.5,
        top_p=0.9,
        user="u",
    ),
]


def _key_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = []
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else []
    )
    for key, inner in items:
        out.append((*path, key))
        out += _key_paths(inner, (*path, key))
    return out


@st.composite
def _mutated_body(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(draw(st.sampled_from(_RICH))))
    for _ in range(draw(st.integers(1, 3))):
        paths = _key_paths(body)
        *parents, key = draw(st.sampled_from(paths))
        holder: Any = body
        for parent in parents:
            holder = holder[parent]
        if draw(st.booleans()):
            del holder[key]
        else:
            holder[key] = draw(_junk)
    return body


@settings(max_examples=300, deadline=None)
@given(_mutated_body())
def test_mutated_requests_raise_client_error_never_anything_else(body: dict[str, Any]) -> None:
    with contextlib.suppress(ClientError):
        DIALECT.build_request(body, TARGET)


# --- B: non-streaming answers ----------------------------------------------------------------


def comparable(completion: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in completion.items() if k not in ("id", "created")}


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [("nonstream_text", "nonstream_text"), ("nonstream_tool_use", "nonstream_tool_calls")],
)
def test_protocol_nonstream_fixture(upstream: str, expected: str) -> None:
    raw = (PROTOCOL / f"anthropic/{upstream}.json").read_bytes()
    got = DIALECT.translate_response(raw, META)
    assert comparable(got) == comparable(load(f"openai_chat/from_anthropic/{expected}.json"))
    assert (got["id"], got["created"]) == (META.completion_id, META.created)


def message(content: list[dict[str, Any]], stop_reason: str | None = "end_turn") -> bytes:
    return json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": content,
            "stop_reason": stop_reason,
            "usage": {"input_tokens": 3, "output_tokens": 5},
        }
    ).encode()


def test_nonstream_thinking_becomes_reasoning_content_and_thinking_blocks() -> None:
    raw = message(
        [
            {"type": "thinking", "thinking": "First.", "signature": "s1"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "thinking", "thinking": "Second.", "signature": "s2"},
            {"type": "text", "text": "Answer."},
        ]
    )
    msg = DIALECT.translate_response(raw, META)["choices"][0]["message"]
    assert msg["content"] == "Answer."
    assert msg["reasoning_content"] == "First.\n\nSecond."  # P-B2
    assert msg["thinking_blocks"] == [
        {"type": "thinking", "thinking": "First.", "signature": "s1"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "thinking", "thinking": "Second.", "signature": "s2"},
    ]


def test_nonstream_thinking_blocks_round_trip_into_the_next_request() -> None:
    raw = message(
        [
            {"type": "thinking", "thinking": "Use the tool.", "signature": "s1"},
            {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Oslo"}},
        ],
        "tool_use",
    )
    msg = DIALECT.translate_response(raw, META)["choices"][0]["message"]
    assert msg["content"] is None  # tool calls and no text
    body = chat(HELLO, msg, {"role": "tool", "tool_call_id": "toolu_1", "content": "4 °C"})
    out = translate(body)
    assert out["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "Use the tool.", "signature": "s1"},
        {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Oslo"}},
    ]


def test_nonstream_server_tool_blocks_are_dropped_and_empty_text_is_empty_string() -> None:
    raw = message(
        [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
        ],
        "pause_turn",
    )
    choice = DIALECT.translate_response(raw, META)["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "",
        "refusal": None,
        "annotations": [],
    }
    assert choice["finish_reason"] == "stop"


def test_nonstream_refusal_is_content_filter() -> None:
    choice = DIALECT.translate_response(message([], "refusal"), META)["choices"][0]
    assert choice["finish_reason"] == "content_filter"


def test_nonstream_tool_arguments_are_compact_json_of_the_input() -> None:
    tool_input = {"path": "caf\u00e9 \u2013 \u00fcn\u00ef.md", "n": [1, 2], "nested": {"ok": True}}
    raw = message([{"type": "tool_use", "id": "t", "name": "f", "input": tool_input}], "tool_use")
    call = DIALECT.translate_response(raw, META)["choices"][0]["message"]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == tool_input
    assert " " not in call["function"]["arguments"].replace("caf\u00e9 \u2013 \u00fcn\u00ef.md", "")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"content": "text"}',
        b'{"content": [{"type": "text"}]}',
        b'{"content": [{"type": "tool_use", "id": "t", "name": "f", "input": []}]}',
    ],
)
def test_nonstream_malformed_body_is_an_upstream_protocol_error(raw: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        DIALECT.translate_response(raw, META)


def test_nonstream_error_body_with_200_is_an_upstream_status_error() -> None:
    raw = b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
    with pytest.raises(UpstreamStatusError) as info:
        DIALECT.translate_response(raw, META)
    assert (info.value.status, info.value.upstream_status) == (529, 200)


# --- tables ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "row",
    [r for r in load("tables/stop_reason_to_finish_reason.json") if r["upstream"] == "anthropic"],
)
def test_stop_reason_table(row: dict[str, Any]) -> None:
    assert finish_reason(row["stop_reason"]) == row["finish_reason"]
    raw = message([{"type": "text", "text": "x"}], row["stop_reason"])
    assert (
        DIALECT.translate_response(raw, META)["choices"][0]["finish_reason"] == row["finish_reason"]
    )


@pytest.mark.parametrize(
    "row", [r for r in load("tables/usage.json") if r["upstream"] == "anthropic"]
)
def test_usage_table(row: dict[str, Any]) -> None:
    assert openai_usage(row["in"]) == row["out"]


def test_usage_counts_that_are_not_counts_are_zero() -> None:
    assert openai_usage(
        {"input_tokens": None, "output_tokens": "7", "cache_read_input_tokens": True}
    ) == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


# --- F.1: errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["429", "529"])
def test_protocol_error_fixture(status: str) -> None:
    upstream = load(f"anthropic/errors/{status}.json")
    expected = load(f"openai_chat/errors/from_anthropic_{status}.json")
    error = DIALECT.translate_error(
        upstream["status"],
        tuple(upstream["headers"].items()),
        json.dumps(upstream["body"]).encode(),
    )
    assert isinstance(error, UpstreamStatusError)
    assert error.status == expected["status"]
    assert error.upstream_status == upstream["status"]
    assert error_body(error) == expected["body"]
    # content-type is the face's; the error carries the headers to forward (F.1).
    forwarded = {k: v for k, v in expected["headers"].items() if k != "content-type"}
    assert dict(error.headers) == forwarded
    assert error.retryable


def test_error_headers_are_matched_case_insensitively() -> None:
    error = DIALECT.translate_error(
        429,
        (("Retry-After-Ms", "1500"), ("Request-Id", "req_1"), ("Anthropic-Organization-Id", "o")),
        b"",
    )
    assert dict(error.headers) == {"retry-after-ms": "1500", "x-request-id": "req_1"}
    assert error.retry_after == 1.5


def test_401_keeps_its_status_and_type() -> None:
    body = b'{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}'
    error = DIALECT.translate_error(401, (), body)
    assert error_body(error)["error"] == {
        "message": "invalid x-api-key",
        "type": "authentication_error",
        "param": None,
        "code": None,
    }
    assert error.status == 401
    assert not error.retryable


def test_non_anthropic_error_body_gives_status_and_a_scrubbed_short_excerpt() -> None:
    page = (
        b"<html><body>\n<h1>503 Service Unavailable</h1>\n"
        b"<p>x-api-key: sk-ant-api03-AbCdEf123456_-xyz Authorization: Bearer abcdef123456</p>"
        + b"x" * 500
        + b"</body></html>"
    )
    error = DIALECT.translate_error(503, (), page)
    assert error.status == 503
    assert error.message.startswith("upstream answered HTTP 503: <html><body> <h1>503")
    assert len(error.message) <= len("upstream answered HTTP 503: ") + 200
    assert "sk-ant" not in error.message
    assert "abcdef123456" not in error.message
    assert "\n" not in error.message
    assert error.error_type == "api_error"


def test_empty_error_body_says_the_status() -> None:
    error = DIALECT.translate_error(504, (), b"")
    assert (error.message, error.status, error.error_type) == (
        "upstream answered HTTP 504",
        504,
        "timeout_error",
    )


def test_rate_limit_without_anthropic_body_still_gets_the_rate_limit_code() -> None:
    error = DIALECT.translate_error(429, (("retry-after", "3"),), b"Too Many Requests")
    assert error_body(error)["error"]["code"] == "rate_limit_exceeded"
    assert error.message == "upstream answered HTTP 429: Too Many Requests"


def test_a_2xx_status_handed_to_translate_error_becomes_502() -> None:
    error = DIALECT.translate_error(200, (), b'{"error": {"message": "bad", "type": "api_error"}}')
    assert (error.status, error.upstream_status, error.message) == (502, 200, "bad")


@pytest.mark.parametrize(
    "secret",
    ["sk-ant-api03-abcDEF_123-xyz", "sk-proj-abcdefgh12345", "Bearer eyJhbGciOiJIUzI1NiJ9.abc"],
)
def test_scrub_removes_things_that_look_like_keys(secret: str) -> None:
    token = secret.split()[-1]
    assert token not in scrub(f"failed for {secret} today")


def test_lone_surrogates_are_a_client_error() -> None:
    with pytest.raises(ClientError) as info:
        translate(chat(user("broken \ud800 text")))
    assert "surrogate" in info.value.message
