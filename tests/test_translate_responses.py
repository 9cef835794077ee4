"""ResponsesDialect requests (MAPPING.md D), non-streaming answers (E) and the OpenAI error
pass-through both OpenAI dialects share (F.1, `openai_common`)."""

from __future__ import annotations

import json
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
from trioproxy.translate.base import Dialect, ModelDefaults, StreamMeta, Target, UpstreamRequest
from trioproxy.translate.chat import ChatDialect
from trioproxy.translate.responses import ResponsesDialect
from trioproxy.validate import RequestLimits, validate_chat_request

META = StreamMeta("chatcmpl-test", 1760000000, "client-model")
USER = [{"role": "user", "content": "Hi"}]


def load(path: str) -> Any:
    return json.loads((PROTOCOL / path).read_text(encoding="utf-8"))


def build(body: dict[str, Any], target: Target | None = None) -> dict[str, Any]:
    request = ResponsesDialect().build_request(body, target or Target("gpt-up"))
    result: dict[str, Any] = json.loads(request.body)
    return result


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "client-model", "messages": USER, **fields}


# --- the dialect ----------------------------------------------------------------------------


def test_dialect_satisfies_the_protocol() -> None:
    dialect: Dialect = ResponsesDialect()
    assert dialect.name == "openai-responses"


def test_auth_header_is_a_bearer_token() -> None:
    assert ResponsesDialect().auth_headers("sk-x") == (("authorization", "Bearer sk-x"),)


@pytest.mark.parametrize(("stream", "expected"), [(True, True), (False, False), (None, False)])
def test_request_goes_to_responses_and_follows_the_stream_flag(
    stream: bool | None, expected: bool
) -> None:
    body = chat() if stream is None else chat(stream=stream)
    request = ResponsesDialect().build_request(body, Target("gpt-up"))
    assert (request.path, request.stream, request.headers) == ("/responses", expected, ())
    assert ("stream" in json.loads(request.body)) is expected  # `false` is the same as absent


@pytest.mark.parametrize("name", ["text_stream", "tools_stream"])
def test_protocol_request_fixture_translates_exactly(name: str) -> None:
    body = load(f"openai_chat/requests/{name}.json")
    want = load(f"openai_responses/requests/{name}.expected.json")
    assert build(body, Target("proxy-test-model")) == want


def test_upstream_model_comes_from_the_target_and_store_is_false() -> None:
    out = build(chat())
    assert out == {"model": "gpt-up", "input": USER, "store": False}


def test_client_may_ask_to_store() -> None:
    assert build(chat(store=True))["store"] is True


def test_default_system_prompt_becomes_instructions_ahead_of_the_input() -> None:
    out = build(chat(), Target("gpt-up", ModelDefaults(system_prompt="Be brief.")))
    assert out["instructions"] == "Be brief."
    assert out["input"] == USER


# --- max_output_tokens (D, P-D2, H.20) --------------------------------------------------------


def test_max_completion_tokens_wins_over_max_tokens_and_the_default() -> None:
    target = Target("gpt-up", ModelDefaults(max_tokens=500))
    assert (
        build(chat(max_tokens=100, max_completion_tokens=200), target)["max_output_tokens"] == 200
    )
    assert build(chat(max_tokens=100), target)["max_output_tokens"] == 100
    assert build(chat(), target)["max_output_tokens"] == 500
    assert "max_output_tokens" not in build(chat())


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_below_16_is_refused_with_the_upstreams_code(field: str) -> None:
    with pytest.raises(ClientError) as info:
        build(chat(**{field: 15}))
    assert (info.value.param, info.value.code, info.value.status) == (
        field,
        "integer_below_min_value",
        400,
    )
    assert "16" in info.value.message
    assert build(chat(**{field: 16}))["max_output_tokens"] == 16


def test_a_configured_default_below_16_is_raised_to_16() -> None:
    assert build(chat(), Target("gpt-up", ModelDefaults(max_tokens=5)))["max_output_tokens"] == 16


# --- reasoning (P-D5) and sampling (P-D4) ---------------------------------------------------


@pytest.mark.parametrize(
    ("effort", "expected"), load("tables/reasoning_effort.json")["responses_reasoning"].items()
)
def test_reasoning_effort_table(effort: str, expected: dict[str, Any]) -> None:
    out = build(chat(reasoning_effort=effort))
    assert out["reasoning"] == expected["reasoning"]


def test_models_default_reasoning_effort_applies_unless_the_client_sets_one() -> None:
    target = Target("gpt-up", ModelDefaults(reasoning_effort="high"))
    assert build(chat(), target)["reasoning"] == {"effort": "high", "summary": "auto"}
    assert build(chat(reasoning_effort="low"), target)["reasoning"]["effort"] == "low"


def test_bad_default_reasoning_effort_is_a_client_error_not_a_crash() -> None:
    with pytest.raises(ClientError) as info:
        build(chat(), Target("gpt-up", ModelDefaults(reasoning_effort="extreme")))
    assert info.value.param == "reasoning_effort"


def test_reasoning_drops_temperature_and_top_p() -> None:
    out = build(chat(reasoning_effort="medium", temperature=0.2, top_p=0.5))
    assert "temperature" not in out and "top_p" not in out
    by_default = Target("gpt-up", ModelDefaults(reasoning_effort="low"))
    assert "temperature" not in build(chat(temperature=0.2), by_default)


def test_reasoning_effort_none_keeps_temperature_and_top_p() -> None:
    out = build(chat(reasoning_effort="none", temperature=0.2, top_p=0.5))
    assert (out["temperature"], out["top_p"]) == (0.2, 0.5)


def test_temperature_passes_unchanged_over_1() -> None:
    assert build(chat(temperature=1.7))["temperature"] == 1.7  # Responses' range is 0-2 too


# --- refused and dropped fields (D, P-D3, P-D6) -------------------------------------------------


def test_n_greater_than_one_is_refused_and_n_one_accepted() -> None:
    with pytest.raises(UntranslatableRequest) as info:
        build(chat(n=2))
    assert (info.value.param, info.value.code) == ("n", "unsupported_parameter")
    assert "n" not in build(chat(n=1))


@pytest.mark.parametrize("stop", ["END", ["a", "b"], [""]])
def test_stop_is_refused(stop: Any) -> None:
    with pytest.raises(UntranslatableRequest) as info:
        build(chat(stop=stop))
    assert (info.value.param, info.value.code) == ("stop", "unsupported_parameter")


def test_empty_stop_is_accepted() -> None:
    assert build(chat(stop=[])) == build(chat())


@pytest.mark.parametrize(("field", "value"), [("modalities", ["text", "audio"]), ("audio", {})])
def test_audio_output_is_refused(field: str, value: Any) -> None:
    with pytest.raises(UntranslatableRequest) as info:
        build(chat(**{field: value}))
    assert info.value.param == field


def test_dropped_fields_do_not_reach_the_upstream() -> None:
    out = build(
        chat(
            seed=1,
            frequency_penalty=0.5,
            presence_penalty=0.5,
            logit_bias={"1": 2},
            prediction={"type": "content", "content": "x"},
            web_search_options={},
            modalities=["text"],
            stream_options={"include_usage": True},
            something_new={"x": 1},
            logprobs=False,
            top_logprobs=3,
        )
    )
    assert out == {"model": "gpt-up", "input": USER, "store": False}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user", "u-1"),
        ("safety_identifier", "s-1"),
        ("prompt_cache_key", "k"),
        ("service_tier", "flex"),
        ("metadata", {"a": "b"}),
    ],
)
def test_same_name_fields_pass_through(field: str, value: Any) -> None:
    assert build(chat(**{field: value}))[field] == value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user", 1),
        ("metadata", {"a": 1}),
        ("metadata", "x"),
        ("temperature", "hot"),
        ("store", "yes"),
        ("top_logprobs", 21),
        ("logprobs", "yes"),
        ("verbosity", "loud"),
        ("max_tokens", 0),
    ],
)
def test_badly_typed_fields_are_client_errors_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ClientError) as info:
        build(chat(**{field: value}))
    assert info.value.param == field


def test_logprobs_ask_for_output_text_logprobs() -> None:
    out = build(chat(logprobs=True, top_logprobs=3))
    assert out["include"] == ["message.output_text.logprobs"]
    assert out["top_logprobs"] == 3
    assert "include" not in build(chat(logprobs=True, reasoning_effort="low"))


def test_verbosity_goes_to_text() -> None:
    assert build(chat(verbosity="low"))["text"] == {"verbosity": "low"}


# --- response_format (D) ------------------------------------------------------------------


def test_json_schema_response_format_is_flattened_into_text_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    spec = {"name": "thing", "schema": schema, "strict": True, "description": "d"}
    out = build(chat(response_format={"type": "json_schema", "json_schema": spec}))
    assert out["text"] == {"format": {"type": "json_schema", **spec}}


def test_json_object_and_text_response_formats() -> None:
    assert build(chat(response_format={"type": "json_object"}))["text"] == {
        "format": {"type": "json_object"}
    }
    assert "text" not in build(chat(response_format={"type": "text"}))


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        ({"type": "json_schema"}, "response_format.json_schema"),
        (
            {"type": "json_schema", "json_schema": {"schema": {}}},
            "response_format.json_schema.name",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "x"}},
            "response_format.json_schema.schema",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {}, "strict": "y"}},
            "response_format.json_schema.strict",
        ),
        ({"type": "yaml"}, "response_format.type"),
        ("json", "response_format"),
    ],
)
def test_malformed_response_formats_name_the_field(response_format: Any, param: str) -> None:
    with pytest.raises(ClientError) as info:
        build(chat(response_format=response_format))
    assert info.value.param == param


# --- tools (D, H.19) --------------------------------------------------------------------------


@pytest.mark.parametrize("row", load("tables/tool_choice.json"), ids=lambda row: str(row["openai"]))
def test_tool_choice_table(row: dict[str, Any]) -> None:
    tool = {"type": "function", "function": {"name": "get_weather"}}
    out = build(chat(tools=[tool], **row["openai"]))
    for key, value in row["responses"].items():
        assert out[key] == value


def test_tools_are_flattened_and_strict_false_is_explicit() -> None:
    tools = [
        {"type": "function", "function": {"name": "a"}},
        {
            "type": "function",
            "function": {"name": "b", "strict": True, "parameters": {"type": "object"}},
        },
    ]
    out = build(chat(tools=tools))
    assert out["tools"] == [
        {
            "type": "function",
            "name": "a",
            "parameters": {"type": "object", "properties": {}},
            "strict": False,
        },
        {"type": "function", "name": "b", "parameters": {"type": "object"}, "strict": True},
    ]


def test_tool_choice_and_parallel_tool_calls_without_tools_are_dropped() -> None:
    out = build(chat(tool_choice="required", parallel_tool_calls=False, tools=[]))
    assert "tool_choice" not in out and "parallel_tool_calls" not in out and "tools" not in out


@pytest.mark.parametrize(
    ("tool", "param"),
    [
        ({"type": "custom"}, "tools[0]"),
        ({"type": "function", "function": {}}, "tools[0].function.name"),
        (
            {"type": "function", "function": {"name": "a", "parameters": []}},
            "tools[0].function.parameters",
        ),
        (
            {"type": "function", "function": {"name": "a", "description": 1}},
            "tools[0].function.description",
        ),
        (
            {"type": "function", "function": {"name": "a", "strict": "no"}},
            "tools[0].function.strict",
        ),
    ],
)
def test_malformed_tools_name_the_field(tool: Any, param: str) -> None:
    with pytest.raises(ClientError) as info:
        build(chat(tools=[tool]))
    assert info.value.param == param


# --- messages (D.1) -----------------------------------------------------------------------------


def test_system_and_developer_messages_keep_their_place_and_role() -> None:
    messages = [
        {"role": "developer", "content": "Rule one."},
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": [{"type": "text", "text": "Rule two."}]},
        {"role": "user", "content": "Again"},
    ]
    out = build(chat(messages=messages))
    assert out["input"] == [
        {"role": "developer", "content": "Rule one."},
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": [{"type": "input_text", "text": "Rule two."}]},
        {"role": "user", "content": "Again"},
    ]


def test_non_text_system_part_names_the_part() -> None:
    content = [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]
    with pytest.raises(ClientError) as info:
        build(chat(messages=[{"role": "system", "content": content}, *USER]))
    assert info.value.param == "messages[0].content[0]"


def test_user_parts_become_input_text_image_and_file() -> None:
    content = [
        {"type": "text", "text": "Look"},
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
        },
        {"type": "file", "file": {"file_id": "file-123"}},
    ]
    out = build(chat(messages=[{"role": "user", "content": content, "name": "ann"}]))
    assert out["input"] == [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Look"},
                {"type": "input_image", "image_url": "https://x/y.png", "detail": "auto"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
                {
                    "type": "input_file",
                    "file_data": "data:application/pdf;base64,JVBE",
                    "filename": "a.pdf",
                },
                {"type": "input_file", "file_id": "file-123"},
            ],
        }
    ]


@pytest.mark.parametrize(
    ("part", "param", "error"),
    [
        (
            {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}},
            "",
            UntranslatableRequest,
        ),
        ({"type": "file", "file": {"filename": "a.pdf"}}, ".file", ClientError),
        ({"type": "file", "file": {"file_id": 3}}, ".file.file_id", ClientError),
        ({"type": "image_url", "image_url": {}}, ".image_url.url", ClientError),
        (
            {"type": "image_url", "image_url": {"url": "u", "detail": 1}},
            ".image_url.detail",
            ClientError,
        ),
        ({"type": "video"}, "", ClientError),
    ],
)
def test_unusable_user_parts_are_refused_naming_the_part(
    part: dict[str, Any], param: str, error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        build(chat(messages=[{"role": "user", "content": [part]}]))
    assert isinstance(info.value, ClientError)
    assert info.value.param == "messages[0].content[0]" + param


def test_assistant_text_then_tool_calls_become_function_call_items_and_tool_outputs() -> None:
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Let me "}, {"type": "text", "text": "check."}],
            "reasoning_content": "dropped",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"a": 1}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "one"},
        {
            "role": "tool",
            "tool_call_id": "call_2",
            "content": [{"type": "text", "text": "t"}, {"type": "text", "text": "wo"}],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_3", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_3", "content": ""},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
    ]
    assert build(chat(messages=messages))["input"] == [
        *USER,
        {"role": "assistant", "content": "Let me check."},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"a": 1}'},
        {"type": "function_call", "call_id": "call_2", "name": "g", "arguments": ""},
        {"type": "function_call_output", "call_id": "call_1", "output": "one"},
        {"type": "function_call_output", "call_id": "call_2", "output": "two"},
        {"type": "function_call", "call_id": "call_3", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_3", "output": ""},
    ]


def test_consecutive_same_role_messages_are_not_merged() -> None:
    messages = [*USER, {"role": "user", "content": "More"}]
    assert build(chat(messages=messages))["input"] == messages


def test_nothing_left_to_send_is_a_client_error() -> None:
    with pytest.raises(ClientError) as info:
        build(chat(messages=[{"role": "assistant", "content": ""}]))
    assert info.value.param == "messages"


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "robot", "content": "x"}, "messages[0].role"),
        ({"role": "tool", "content": "x"}, "messages[0].tool_call_id"),
        ({"role": "assistant", "tool_calls": [{"id": "c"}]}, "messages[0].tool_calls[0]"),
        ({"role": "assistant", "tool_calls": "x"}, "messages[0].tool_calls"),
        ({"role": "user", "content": 5}, "messages[0].content"),
        ({"role": "assistant", "content": [{"type": "image_url"}]}, "messages[0].content[0]"),
    ],
)
def test_malformed_messages_name_the_field(message: dict[str, Any], param: str) -> None:
    with pytest.raises(ClientError) as info:
        build(chat(messages=[message]))
    assert info.value.param == param


def test_non_dict_body_is_a_client_error() -> None:
    with pytest.raises(ClientError):
        ResponsesDialect().build_request([], Target("x"))  # type: ignore[arg-type]


# --- property: any valid request translates or is refused, never crashes --------------------

_text = st.text(max_size=8)
_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": _text}),
    st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": st.fixed_dictionaries({"url": _text}, optional={"detail": _text}),
        }
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["file", "input_audio", "refusal"])},
        optional={"file": st.dictionaries(st.sampled_from(["file_id", "file_data"]), _text)},
    ),
)
_content = _text | st.lists(_part, max_size=3)
_call = st.fixed_dictionaries(
    {
        "id": _text,
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": _text, "arguments": _text}),
    }
)
_message = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "developer", "user"]), "content": _content}
    ),
    st.fixed_dictionaries(
        {"role": st.just("assistant"), "content": st.none() | _content},
        optional={"tool_calls": st.lists(_call, max_size=2), "reasoning_content": _text},
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
                "parameters": st.just({"type": "object"}),
                "strict": st.booleans(),
            },
        ),
    }
)
_body = st.fixed_dictionaries(
    {"model": st.just("m"), "messages": st.lists(_message, min_size=1, max_size=4)},
    optional={
        "stream": st.booleans(),
        "max_tokens": st.integers(1, 40),
        "max_completion_tokens": st.integers(1, 40),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "n": st.integers(1, 2),
        "stop": st.none() | _text | st.lists(_text, max_size=2),
        "tools": st.lists(_tool, max_size=2),
        "tool_choice": st.sampled_from(
            ["auto", "none", "required", {"type": "function", "function": {"name": "f"}}]
        ),
        "parallel_tool_calls": st.booleans(),
        "reasoning_effort": st.sampled_from(
            ["none", "minimal", "low", "medium", "high", "xhigh", "max"]
        ),
        "user": _text,
        "response_format": st.sampled_from(
            [
                {"type": "text"},
                {"type": "json_object"},
                {"type": "json_schema", "json_schema": {"name": "n", "schema": {}}},
                {"type": "json_schema"},
            ]
        ),
        "seed": st.integers(),
        "logprobs": st.booleans(),
        "metadata": st.dictionaries(_text, _text | st.integers(), max_size=2),
        "verbosity": st.sampled_from(["low", "loud"]),
    },
)


@pytest.mark.parametrize("dialect", [ResponsesDialect(), ChatDialect()], ids=lambda d: d.name)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=_body,
    defaults=st.builds(
        ModelDefaults,
        max_tokens=st.none() | st.integers(1, 99),
        reasoning_effort=st.none() | st.sampled_from(["low", "bogus"]),
        system_prompt=st.none() | _text,
    ),
)
def test_any_valid_request_translates_or_is_refused_as_a_client_error(
    dialect: Dialect, body: dict[str, Any], defaults: ModelDefaults
) -> None:
    try:
        valid = validate_chat_request(body, limits=RequestLimits())
    except ClientError:
        return  # not a valid request: validation's job, not the translator's
    try:
        request = dialect.build_request(valid, Target("up", defaults))
    except ClientError as exc:
        refused: ClientError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.status == 400 and refused.message
        return
    assert isinstance(request, UpstreamRequest)
    out = json.loads(request.body)
    assert out["model"] == "up"
    assert request.stream is (valid.get("stream") is True)


# --- non-streaming answers (E, P-E1) ---------------------------------------------------------


def response_body(**fields: Any) -> bytes:
    body = {"id": "resp_1", "status": "completed", "model": "gpt-x", "output": [], **fields}
    return json.dumps(body).encode()


def test_protocol_nonstream_fixture_translates_exactly() -> None:
    raw = (PROTOCOL / "openai_responses" / "nonstream_text.json").read_bytes()
    meta = StreamMeta(
        "chatcmpl-resp_0c3f9a1e7b2d4f6081a5c7e9b1d3f5a7c9e1b3d5f7a9c1e3", 1760000000, "m"
    )
    assert ResponsesDialect().translate_response(raw, meta) == load(
        "openai_chat/from_responses/nonstream_text.json"
    )


def test_nonstream_function_calls_reasoning_and_refusal() -> None:
    output = [
        {
            "type": "reasoning",
            "summary": [
                {"type": "summary_text", "text": "A"},
                {"type": "summary_text", "text": "B"},
            ],
        },
        {"type": "reasoning", "summary": [], "content": []},  # [S24]: no reasoning text at all
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        {"type": "message", "content": [{"type": "refusal", "refusal": "No."}]},
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_1",
            "name": "f",
            "arguments": "{}",
        },
    ]
    usage = {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 2},
        "output_tokens": 5,
        "total_tokens": 15,
    }
    completion = ResponsesDialect().translate_response(
        response_body(output=output, usage=usage), META
    )
    assert completion["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": "No.",
                "annotations": [],
                "reasoning_content": "A\n\nB",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ]
    assert completion["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 2},
    }
    assert (completion["id"], completion["created"], completion["model"]) == (
        "chatcmpl-test",
        1760000000,
        "gpt-x",
    )


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("max_output_tokens", "length"), ("content_filter", "content_filter"), (None, "length")],
)
def test_nonstream_incomplete_finish_reasons(reason: str | None, finish: str) -> None:
    raw = response_body(status="incomplete", incomplete_details={"reason": reason})
    completion = ResponsesDialect().translate_response(raw, META)
    assert completion["choices"][0]["finish_reason"] == finish
    assert completion["choices"][0]["message"]["content"] == ""
    assert completion["usage"]["total_tokens"] == 0


def test_nonstream_failed_response_is_a_500_with_the_upstream_message() -> None:
    raw = response_body(status="failed", error={"code": "server_error", "message": "boom"})
    with pytest.raises(UpstreamStatusError) as info:
        ResponsesDialect().translate_response(raw, META)
    exc = info.value
    assert (exc.status, exc.message, exc.error_type, exc.code) == (
        500,
        "boom",
        "server_error",
        "server_error",
    )


def test_nonstream_failed_rate_limit_is_a_429() -> None:
    raw = response_body(status="failed", error={"code": "rate_limit_exceeded", "message": "slow"})
    with pytest.raises(UpstreamStatusError) as info:
        ResponsesDialect().translate_response(raw, META)
    assert info.value.status == 429 and info.value.retryable


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"not json", UpstreamProtocolError),
        (b"[]", UpstreamProtocolError),
        (b'{"status": "completed"}', UpstreamProtocolError),
        (b'{"status": "in_progress", "output": []}', UpstreamProtocolError),
        (b'{"output": [{"type": "function_call", "name": "f"}]}', UpstreamProtocolError),
        (b'{"error": {"message": "bad", "type": "invalid_request_error"}}', UpstreamStatusError),
    ],
)
def test_nonstream_bodies_that_are_not_responses_are_upstream_errors(
    raw: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        ResponsesDialect().translate_response(raw, META)


def test_nonstream_logprobs_become_choice_logprobs() -> None:
    logprobs = [
        {"token": "Hi", "logprob": -0.1, "top_logprobs": [{"token": "Hi", "logprob": -0.1}]}
    ]
    output = [
        {
            "type": "message",
            "content": [{"type": "output_text", "text": "Hi", "logprobs": logprobs}],
        }
    ]
    completion = ResponsesDialect().translate_response(response_body(output=output), META)
    assert completion["choices"][0]["logprobs"] == {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.1,
                "bytes": [72, 105],
                "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}],
            }
        ],
        "refusal": None,
    }


# --- errors before the stream (F.1): shared by both OpenAI dialects ----------------------------

DIALECTS = [ResponsesDialect(), ChatDialect()]


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_openai_error_bodies_pass_through_unchanged_with_their_headers(dialect: Dialect) -> None:
    body = {
        "error": {
            "message": "Rate limit reached for requests",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    headers = (
        ("Content-Type", "application/json"),
        ("retry-after", "2"),
        ("Retry-After-Ms", "1500"),
        ("x-should-retry", "true"),
        ("x-request-id", "req_123"),
        ("x-ratelimit-remaining-requests", "0"),
    )
    exc = dialect.translate_error(429, headers, json.dumps(body).encode())
    assert isinstance(exc, UpstreamStatusError)
    assert (exc.status, exc.upstream_status, exc.message, exc.error_type, exc.param, exc.code) == (
        429,
        429,
        "Rate limit reached for requests",
        "requests",
        None,
        "rate_limit_exceeded",
    )
    assert exc.headers == (
        ("retry-after", "2"),
        ("retry-after-ms", "1500"),
        ("x-should-retry", "true"),
        ("x-request-id", "req_123"),
    )
    assert exc.retry_after == 1.5


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_openai_error_param_and_type_are_kept(dialect: Dialect) -> None:
    body = {
        "error": {
            "message": "Invalid 'input'",
            "type": "invalid_request_error",
            "param": "input",
            "code": None,
        }
    }
    exc = dialect.translate_error(400, (), json.dumps(body).encode())
    assert isinstance(exc, UpstreamStatusError)
    assert (exc.status, exc.error_type, exc.param, exc.code) == (
        400,
        "invalid_request_error",
        "input",
        None,
    )


@pytest.mark.parametrize(
    ("body", "message", "kind", "code"),
    [
        ({"error": "model overloaded"}, "model overloaded", "server_error", None),
        (
            {"object": "error", "message": "too long", "type": "BadRequestError", "code": 400},
            "too long",
            "BadRequestError",
            "400",
        ),
        (
            [{"error": {"code": 400, "message": "bad arg", "status": "INVALID_ARGUMENT"}}],
            "bad arg",
            "server_error",
            "400",
        ),
    ],
)
def test_compatible_servers_error_shapes_are_read(
    body: Any, message: str, kind: str, code: str | None
) -> None:
    exc = ChatDialect().translate_error(503, (), json.dumps(body).encode())
    assert (exc.status, exc.message, exc.error_type, exc.code) == (503, message, kind, code)


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_non_json_error_bodies_get_a_scrubbed_excerpt(dialect: Dialect) -> None:
    page = (
        b"<html>\n<body>502 Bad Gateway: Authorization: Bearer sk-proj-abcdefghijklmnopqrstuvwxyz "
        b"and key sk-ant-api03-0123456789abcdef</body></html>" + b"x" * 500
    )
    exc = dialect.translate_error(502, (), page)
    assert isinstance(exc, UpstreamStatusError)
    assert exc.status == 502 and exc.error_type == "server_error"
    assert exc.message.startswith("upstream answered HTTP 502: <html> <body>502 Bad Gateway")
    assert "sk-proj-abc" not in exc.message and "sk-ant-api03-0123" not in exc.message
    assert "[redacted]" in exc.message
    assert len(exc.message) < 260 and "\n" not in exc.message


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (429, "rate_limit_error", "rate_limit_exceeded"),
        (401, "authentication_error", None),
        (404, "not_found_error", None),
        (418, "invalid_request_error", None),
    ],
)
def test_bare_statuses_get_a_matching_type(status: int, kind: str, code: str | None) -> None:
    exc = ResponsesDialect().translate_error(status, (), b"")
    assert (exc.status, exc.message, exc.error_type, exc.code) == (
        status,
        f"upstream answered HTTP {status}",
        kind,
        code,
    )


def test_a_status_below_400_becomes_502() -> None:
    # H.5: the engine hands over a 2xx JSON answer to a streaming request as an error.
    exc = ResponsesDialect().translate_error(200, (), b'{"error": {"message": "no"}}')
    assert (exc.status, exc.upstream_status, exc.message) == (502, 200, "no")


def test_keys_in_openai_error_messages_are_scrubbed() -> None:
    body = {
        "error": {
            "message": "Incorrect API key provided: sk-abcdefghijklmnop1234.",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }
    exc = ResponsesDialect().translate_error(401, (), json.dumps(body).encode())
    assert "sk-abcdefghijklmnop1234" not in exc.message
    assert exc.code == "invalid_api_key"
