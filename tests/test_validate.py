"""Request validation: a catalogue of bad bodies -> (status, param, code), good bodies pass
unchanged, hostile JSON (deep, non-UTF-8, NaN) is a 400, and the fuzz invariant: any value in,
a dict that keeps every guarantee or a ClientError out."""

# The catalogues keep one case per line (# fmt: off), so some lines run past 100 columns.
# ruff: noqa: E501
from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import PROTOCOL
from trioproxy.config_types import ProxySettings
from trioproxy.errors import ClientError
from trioproxy.validate import (
    REASONING_EFFORTS,
    ROLES,
    RequestLimits,
    parse_json_body,
    validate_chat_request,
)

LIMITS = RequestLimits()
USER = {"role": "user", "content": "hello"}
MINIMAL: dict[str, Any] = {"model": "demo", "messages": [USER]}


def body(**fields: Any) -> dict[str, Any]:
    return {**MINIMAL, **fields}


def with_messages(*messages: Any, **fields: Any) -> dict[str, Any]:
    return {**MINIMAL, "messages": list(messages), **fields}


def rejected(value: object, limits: RequestLimits = LIMITS) -> ClientError:
    with pytest.raises(ClientError) as info:
        validate_chat_request(value, limits=limits)
    return info.value


# --- good bodies ------------------------------------------------------------------------------------

FULL: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        {
            "role": "user",
            "name": "alice",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://x.example/a.png", "detail": "low"},
                },
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "input_audio", "input_audio": {"data": "...", "format": "wav"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "look", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "a cat"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "A cat."}, {"type": "refusal", "refusal": "x"}],
        },
        {"role": "assistant", "tool_calls": []},  # content absent: allowed for assistant
        {"role": "user", "content": ""},
    ],
    "stream": True,
    "stream_options": {"include_usage": True},
    "max_tokens": 1,
    "max_completion_tokens": 4096,
    "temperature": 2,
    "top_p": 0.0,
    "n": 1,
    "stop": ["a", "b", "c", "d"],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "look",
                "description": "Look at things",
                "parameters": {"type": "object", "properties": {}},
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "bare"}},
    ],
    "tool_choice": {"type": "function", "function": {"name": "look"}},
    "parallel_tool_calls": False,
    "reasoning_effort": "xhigh",
    "user": "user-1234",
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
    "seed": 7,  # unknown to the translators: kept
    "metadata": {"a": "b"},
    "logit_bias": {"50256": -100},
}

GOOD = [
    MINIMAL,
    FULL,
    body(stream=False),
    body(stop="END"),
    body(stop=[]),
    body(temperature=0.7, top_p=1),
    body(tools=[]),
    *[body(tool_choice=mode) for mode in ("none", "auto", "required")],
    *[body(reasoning_effort=effort) for effort in REASONING_EFFORTS],
    *[with_messages({"role": role, "content": "x"}) for role in ROLES if role != "tool"],
    with_messages({"role": "tool", "tool_call_id": "t", "content": "42"}),
    with_messages({"role": "assistant", "content": "prefill"}),
    body(messages=[USER] * 5),
]


@pytest.mark.parametrize("good", GOOD)
def test_good_bodies_pass_unchanged(good: dict[str, Any]) -> None:
    before = copy.deepcopy(good)
    out = validate_chat_request(good, limits=LIMITS)
    assert out == before
    assert good == before  # the caller's dict is not touched
    assert out is not good  # a copy: the caller may set out["stream"] without surprises


@pytest.mark.parametrize("name", ["text_stream.json", "tools_stream.json"])
def test_protocol_fixture_requests_pass_unchanged(name: str) -> None:
    raw = (PROTOCOL / "openai_chat" / "requests" / name).read_bytes()
    parsed = parse_json_body(raw, max_depth=64)
    assert validate_chat_request(parsed, limits=LIMITS) == json.loads(raw)


def test_nulls_for_optional_fields_mean_absent_and_are_removed() -> None:
    nulls = {
        key: None
        for key in (
            "stream",
            "stream_options",
            "max_tokens",
            "max_completion_tokens",
            "temperature",
            "top_p",
            "n",
            "stop",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "reasoning_effort",
            "user",
            "response_format",
        )
    }
    original = body(**nulls, seed=None)
    out = validate_chat_request(original, limits=LIMITS)
    assert out == {**MINIMAL, "seed": None}  # unknown fields are kept as they are, null or not
    assert original["stream"] is None


def test_assistant_tool_calls_null_is_removed_without_touching_the_input() -> None:
    message = {"role": "assistant", "content": "hi", "tool_calls": None, "refusal": None}
    original = with_messages(USER, message)
    out = validate_chat_request(original, limits=LIMITS)
    assert out["messages"][1] == {"role": "assistant", "content": "hi", "refusal": None}
    assert original["messages"][1]["tool_calls"] is None


def test_null_description_parameters_and_strict_of_a_tool_are_removed() -> None:
    tool = {
        "type": "function",
        "function": {"name": "f", "description": None, "parameters": None, "strict": None},
    }
    original = body(tools=[tool])
    out = validate_chat_request(original, limits=LIMITS)
    assert out["tools"] == [{"type": "function", "function": {"name": "f"}}]
    assert original["tools"][0]["function"]["strict"] is None


def test_request_limits_follow_the_proxy_settings() -> None:
    settings_ = ProxySettings(max_messages=3, max_tools=4, max_json_depth=9)
    assert RequestLimits.from_settings(settings_) == RequestLimits(3, 4, 9)


# --- the catalogue of bad bodies -------------------------------------------------------------------

TOOL = {"type": "function", "function": {"name": "f"}}
CALL = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def assistant_with(calls: Any) -> dict[str, Any]:
    return with_messages(USER, {"role": "assistant", "content": None, "tool_calls": calls})


def user_parts(*parts: Any) -> dict[str, Any]:
    return with_messages({"role": "user", "content": list(parts)})


# fmt: off
# (case id, body, param, code, a fragment of the message)
BAD: list[tuple[str, object, str | None, str, str]] = [
    ("list body", [MINIMAL], None, "invalid_type", "request body must be a JSON object with model and messages, got an array"),
    ("string body", "hi", None, "invalid_type", 'got "hi"'),
    ("null body", None, None, "invalid_type", "got null"),
    ("no model", {"messages": [USER]}, "model", "missing_required_parameter", "model is required"),
    ("null model", body(model=None), "model", "missing_required_parameter", "model is required"),
    ("empty model", body(model=""), "model", "invalid_type", 'model must be a non-empty string, got ""'),
    ("numeric model", body(model=4), "model", "invalid_type", "model must be a non-empty string, got 4"),
    ("no messages", {"model": "m"}, "messages", "missing_required_parameter", "messages is required"),
    ("messages object", body(messages={"role": "user"}), "messages", "invalid_type", "messages must be an array of message objects, got an object"),
    ("messages empty", body(messages=[]), "messages", "empty_array", "messages must contain at least one message"),
    ("message string", with_messages("hello"), "messages[0]", "invalid_type", 'messages[0] must be an object such as {"role": "user", "content": "Hello"}, got "hello"'),
    ("no role", with_messages({"content": "x"}), "messages[0].role", "missing_required_parameter", "messages[0].role is required: one of system, developer, user, assistant, tool"),
    ("bad role", with_messages(USER, {"role": "function", "content": "x"}), "messages[1].role", "invalid_value", 'messages[1].role must be one of system, developer, user, assistant, tool, got "function"'),
    ("role number", with_messages({"role": 1, "content": "x"}), "messages[0].role", "invalid_value", "got 1"),
    ("user no content", with_messages({"role": "user"}), "messages[0].content", "missing_required_parameter", "a user message needs content"),
    ("system null content", with_messages({"role": "system", "content": None}), "messages[0].content", "missing_required_parameter", "a system message needs content"),
    ("content number", with_messages({"role": "user", "content": 5}), "messages[0].content", "invalid_type", "messages[0].content must be a string or an array of content parts, got 5"),
    ("content object", with_messages({"role": "user", "content": {"type": "text"}}), "messages[0].content", "invalid_type", "got an object"),
    ("part string", user_parts("hi"), "messages[0].content[0]", "invalid_type", "content part object"),
    ("part no type", user_parts({"text": "hi"}), "messages[0].content[0].type", "missing_required_parameter", "type is required"),
    ("part type number", user_parts({"type": 1}), "messages[0].content[0].type", "invalid_type", "must be a string"),
    ("text part no text", user_parts({"type": "text"}), "messages[0].content[0].text", "missing_required_parameter", "a text part carries its text"),
    ("text part null text", user_parts({"type": "text", "text": None}), "messages[0].content[0].text", "invalid_type", "must be a string, got null"),
    ("image no image_url", user_parts({"type": "text", "text": "a"}, {"type": "image_url"}), "messages[0].content[1].image_url", "missing_required_parameter", "image_url is required"),
    ("image_url string", user_parts({"type": "image_url", "image_url": "https://x"}), "messages[0].content[0].image_url", "invalid_type", 'must be an object such as {"url": "https://..."}, got "https://x"'),
    ("image no url", user_parts({"type": "image_url", "image_url": {}}), "messages[0].content[0].image_url.url", "missing_required_parameter", "url is required"),
    ("image url number", user_parts({"type": "image_url", "image_url": {"url": 5}}), "messages[0].content[0].image_url.url", "invalid_type", "url must be a string (an https:// or data: URL), got 5"),
    ("image detail number", user_parts({"type": "image_url", "image_url": {"url": "u", "detail": 1}}), "messages[0].content[0].image_url.detail", "invalid_type", "detail must be a string"),
    ("name number", with_messages({"role": "user", "content": "x", "name": 3}), "messages[0].name", "invalid_type", "name must be a string"),
    ("tool_calls object", assistant_with({"id": "c"}), "messages[1].tool_calls", "invalid_type", "must be an array of tool calls"),
    ("tool call string", assistant_with(["c"]), "messages[1].tool_calls[0]", "invalid_type", "must be an object"),
    ("tool call no id", assistant_with([{**CALL, "id": None} | {}]), "messages[1].tool_calls[0].id", "invalid_type", "id must be a string, got null"),
    ("tool call missing id", assistant_with([{k: v for k, v in CALL.items() if k != "id"}]), "messages[1].tool_calls[0].id", "missing_required_parameter", "id is required"),
    ("tool call no type", assistant_with([{k: v for k, v in CALL.items() if k != "type"}]), "messages[1].tool_calls[0].type", "missing_required_parameter", "type is required"),
    ("tool call bad type", assistant_with([{**CALL, "type": "custom"}]), "messages[1].tool_calls[0].type", "invalid_value", 'must be "function", got "custom"'),
    ("tool call no function", assistant_with([{**CALL, "function": None}]), "messages[1].tool_calls[0].function", "missing_required_parameter", "function is required"),
    ("tool call function list", assistant_with([{**CALL, "function": []}]), "messages[1].tool_calls[0].function", "invalid_type", "got an array"),
    ("tool call no name", assistant_with([{**CALL, "function": {"arguments": "{}"}}]), "messages[1].tool_calls[0].function.name", "missing_required_parameter", "name is required"),
    ("tool call arguments dict", assistant_with([{**CALL, "function": {"name": "f", "arguments": {}}}]), "messages[1].tool_calls[0].function.arguments", "invalid_type", 'must be a string of JSON (e.g. "{}"), got an object'),
    ("tool message no id", with_messages(USER, {"role": "tool", "content": "x"}), "messages[1].tool_call_id", "missing_required_parameter", "the id of the tool call this message answers"),
    ("tool message empty id", with_messages(USER, {"role": "tool", "tool_call_id": "", "content": "x"}), "messages[1].tool_call_id", "invalid_type", "non-empty string"),
    ("tool message no content", with_messages(USER, {"role": "tool", "tool_call_id": "c"}), "messages[1].content", "missing_required_parameter", "a tool message needs content"),
    ("stream string", body(stream="true"), "stream", "invalid_type", 'stream must be true or false, got "true"'),
    ("stream number", body(stream=1), "stream", "invalid_type", "got 1"),
    ("stream_options bool", body(stream_options=True), "stream_options", "invalid_type", "must be an object"),
    ("include_usage string", body(stream_options={"include_usage": "yes"}), "stream_options.include_usage", "invalid_type", "include_usage must be true or false"),
    ("include_usage null", body(stream_options={"include_usage": None}), "stream_options.include_usage", "invalid_type", "got null"),
    ("max_tokens zero", body(max_tokens=0), "max_tokens", "invalid_value", "max_tokens must be an integer >= 1, got 0"),
    ("max_tokens float", body(max_tokens=10.0), "max_tokens", "invalid_type", "max_tokens must be an integer >= 1, got 10.0"),
    ("max_tokens bool", body(max_tokens=True), "max_tokens", "invalid_type", "got true"),
    ("max_tokens string", body(max_tokens="100"), "max_tokens", "invalid_type", 'got "100"'),
    ("max_completion_tokens negative", body(max_completion_tokens=-5), "max_completion_tokens", "invalid_value", "got -5"),
    ("n zero", body(n=0), "n", "invalid_value", "n must be an integer >= 1, got 0"),
    ("max_tokens 2**70", body(max_tokens=2**70), "max_tokens", "invalid_value", "max_tokens must be an integer <= 2147483647, got 1180591620717411303424"),
    ("max_completion_tokens 2**31", body(max_completion_tokens=2**31), "max_completion_tokens", "invalid_value", "must be an integer <= 2147483647"),
    ("n 129", body(n=129), "n", "invalid_value", "n must be an integer <= 128, got 129"),
    ("top_logprobs 21", body(top_logprobs=21), "top_logprobs", "invalid_value", "top_logprobs must be an integer <= 20, got 21"),
    ("top_logprobs negative", body(top_logprobs=-1), "top_logprobs", "invalid_value", "must be an integer >= 0, got -1"),
    ("top_logprobs float", body(top_logprobs=2.5), "top_logprobs", "invalid_type", "must be an integer >= 0, got 2.5"),
    ("seed 2**63", body(seed=2**63), "seed", "invalid_value", "seed must be an integer <= 9223372036854775807"),
    ("seed below int64", body(seed=-(2**63) - 1), "seed", "invalid_value", "seed must be an integer >= -9223372036854775808"),
    ("seed string", body(seed="42"), "seed", "invalid_type", 'seed must be an integer, got "42"'),
    ("presence_penalty 3", body(presence_penalty=3), "presence_penalty", "invalid_value", "must be a number between -2 and 2, got 3"),
    ("frequency_penalty huge", body(frequency_penalty=-(10**400)), "frequency_penalty", "invalid_value", "must be a number between -2 and 2"),
    ("logit_bias list", body(logit_bias=[1]), "logit_bias", "invalid_type", "an object of token ids to biases"),
    ("logit_bias value", body(logit_bias={"50256": 101}), "logit_bias.50256", "invalid_value", "must be a number between -100 and 100, got 101"),
    ("temperature high", body(temperature=3), "temperature", "invalid_value", "temperature must be a number between 0 and 2, got 3"),
    ("temperature negative", body(temperature=-0.1), "temperature", "invalid_value", "got -0.1"),
    ("temperature string", body(temperature="hot"), "temperature", "invalid_type", 'temperature must be a number between 0 and 2, got "hot"'),
    ("temperature bool", body(temperature=False), "temperature", "invalid_type", "got false"),
    ("top_p high", body(top_p=1.5), "top_p", "invalid_value", "top_p must be a number between 0 and 1, got 1.5"),
    ("stop five", body(stop=["a", "b", "c", "d", "e"]), "stop", "array_above_max_length", "stop may hold at most 4 sequences, got 5"),
    ("stop number", body(stop=5), "stop", "invalid_type", "stop must be a string or an array of up to 4 strings, got 5"),
    ("stop item number", body(stop=["a", 1]), "stop[1]", "invalid_type", "stop[1] must be a string, got 1"),
    ("tools object", body(tools=TOOL), "tools", "invalid_type", "tools must be an array of tools"),
    ("tool string", body(tools=["f"]), "tools[0]", "invalid_type", "must be an object"),
    ("tool no type", body(tools=[{"function": {"name": "f"}}]), "tools[0].type", "missing_required_parameter", "type is required"),
    ("tool bad type", body(tools=[TOOL, {"type": "web_search"}]), "tools[1].type", "invalid_value", 'tools[1].type must be "function" (the only tool type this proxy serves), got "web_search"'),
    ("tool no function", body(tools=[{"type": "function"}]), "tools[0].function", "missing_required_parameter", "function is required"),
    ("tool no name", body(tools=[{"type": "function", "function": {}}]), "tools[0].function.name", "missing_required_parameter", "name is required"),
    ("tool empty name", body(tools=[{"type": "function", "function": {"name": ""}}]), "tools[0].function.name", "invalid_type", "non-empty string"),
    ("tool description number", body(tools=[{"type": "function", "function": {"name": "f", "description": 1}}]), "tools[0].function.description", "invalid_type", "must be a string"),
    ("tool parameters list", body(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]), "tools[0].function.parameters", "invalid_type", "must be a JSON Schema object, got an array"),
    ("tool strict string", body(tools=[{"type": "function", "function": {"name": "f", "strict": "yes"}}]), "tools[0].function.strict", "invalid_type", "must be true or false"),
    ("tool_choice word", body(tool_choice="any"), "tool_choice", "invalid_value", 'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}, got "any"'),
    ("tool_choice number", body(tool_choice=1), "tool_choice", "invalid_type", "got 1"),
    ("tool_choice bad type", body(tool_choice={"type": "tool", "name": "f"}), "tool_choice.type", "invalid_value", 'must be "function", got "tool"'),
    ("tool_choice no function", body(tool_choice={"type": "function"}), "tool_choice.function", "missing_required_parameter", "naming one of the tools"),
    ("tool_choice function string", body(tool_choice={"type": "function", "function": "f"}), "tool_choice.function", "invalid_type", 'got "f"'),
    ("tool_choice no name", body(tool_choice={"type": "function", "function": {}}), "tool_choice.function.name", "missing_required_parameter", "the name of one of the tools"),
    ("tool_choice name number", body(tool_choice={"type": "function", "function": {"name": 1}}), "tool_choice.function.name", "invalid_type", "got 1"),
    ("parallel_tool_calls string", body(parallel_tool_calls="no"), "parallel_tool_calls", "invalid_type", "must be true or false"),
    ("reasoning_effort bad", body(reasoning_effort="extreme"), "reasoning_effort", "invalid_value", 'reasoning_effort must be one of none, minimal, low, medium, high, xhigh, max, got "extreme"'),
    ("reasoning_effort case", body(reasoning_effort="High"), "reasoning_effort", "invalid_value", 'got "High"'),
    ("user number", body(user=1), "user", "invalid_type", "user must be a string, got 1"),
    ("response_format string", body(response_format="json"), "response_format", "invalid_type", "must be an object"),
    ("response_format no type", body(response_format={}), "response_format.type", "missing_required_parameter", "type is required"),
    ("response_format type number", body(response_format={"type": 1}), "response_format.type", "invalid_type", "must be a string"),
    ("nan temperature", body(temperature=math.nan), "temperature", "invalid_value", "must be a finite number, got nan"),
    ("inf deep", body(metadata={"x": [math.inf]}), "metadata.x[0]", "invalid_value", "must be a finite number, got inf"),
    ("tuple", body(stop=("a",)), "stop", "invalid_type", "must be a JSON value"),
    ("bytes", body(user=b"x"), "user", "invalid_type", "got a bytes"),
    ("int key", body(metadata={1: "x"}), "metadata", "invalid_type", "has a key that is not a valid string: 1"),
    ("lone surrogate", with_messages({"role": "user", "content": "a\ud800b"}), "messages[0].content", "invalid_value", "lone UTF-16 surrogate"),
    ("surrogate key", body(metadata={"\udfff": 1}), "metadata", "invalid_type", "has a key that is not a valid string"),
]
# fmt: on


@pytest.mark.parametrize(
    ("value", "param", "code", "fragment"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_bad_body_is_a_400_naming_the_field(
    value: object, param: str | None, code: str, fragment: str
) -> None:
    error = rejected(value)
    assert (error.status, error.param, error.code) == (400, param, code)
    assert error.error_type == "invalid_request_error"
    assert fragment in error.message, error.message
    if param is not None:
        assert error.message.startswith(param + " ")


def test_integer_bounds_are_inclusive() -> None:
    edge = body(
        max_tokens=2**31 - 1,
        max_completion_tokens=1,
        n=128,
        top_logprobs=0,
        seed=-(2**63),
        presence_penalty=-2,
        frequency_penalty=2.0,
        logit_bias={"1": -100, "2": 100},
    )
    assert validate_chat_request(edge, limits=LIMITS) == edge
    for top in (20, None):  # null for a field validate does not drop is kept as sent
        assert validate_chat_request(body(top_logprobs=top, seed=2**63 - 1), limits=LIMITS)


def test_too_many_messages_and_tools() -> None:
    limits = RequestLimits(max_messages=2, max_tools=1)
    error = rejected(body(messages=[USER] * 3), limits)
    assert (error.param, error.code) == ("messages", "array_above_max_length")
    assert error.message == "messages has 3 messages; this proxy accepts at most 2 (max_messages)"
    error = rejected(body(tools=[TOOL, TOOL]), limits)
    assert (error.param, error.code) == ("tools", "array_above_max_length")
    assert error.message == "tools has 2 tools; this proxy accepts at most 1 (max_tools)"
    assert validate_chat_request(body(messages=[USER] * 2, tools=[TOOL]), limits=limits)


def test_nesting_limit_names_the_deepest_field() -> None:
    limits = RequestLimits(max_json_depth=4)
    # The body is level 1, metadata 2, a 3, b 4.
    assert validate_chat_request(body(metadata={"a": {"b": {}}}), limits=limits)
    error = rejected(body(metadata={"a": {"b": {"c": []}}}), limits)
    assert (error.param, error.code) == ("metadata.a.b.c", "invalid_value")
    assert (
        error.message
        == "metadata.a.b.c nests JSON deeper than 4 levels (max_json_depth); flatten it"
    )


def test_a_dict_nested_100000_deep_is_a_client_error_not_a_recursion_error() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(100_000):
        node["x"] = {}
        node = node["x"]
    error = rejected(body(metadata=deep))
    assert error.code == "invalid_value" and "deeper than 64 levels" in error.message


# --- parse_json_body ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "request body is empty; send a JSON object with model and messages"),
        (b"  \n", "request body is empty"),
        (
            b"{",
            "request body is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        (b'{"model": "m",}', "request body is not valid JSON: Expecting property name"),
        (b"{} {}", "request body is not valid JSON: Extra data"),
        (
            b"\xff\xfe{}",
            "request body is not valid UTF-8 (bad byte at position 0); send JSON encoded as UTF-8",
        ),
        (b'{"a": "\xc3"}', "request body is not valid UTF-8 (bad byte at position 7)"),
        (
            b'{"t": NaN}',
            "request body is not valid JSON: NaN is not a JSON number; send a finite number or null",
        ),
        (b'{"t": Infinity}', "request body is not valid JSON: Infinity is not a JSON number"),
        (b'{"t": -Infinity}', "request body is not valid JSON: -Infinity is not a JSON number"),
        (
            b'{"t": 1e400}',
            "request body is not valid JSON: the number 1e400 is too large for a float",
        ),
        (b'{"t": ' + b"9" * 5000 + b"}", "request body is not valid JSON: Exceeds the limit"),
        (b"[" * 100_000 + b"]" * 100_000, "request body nests JSON deeper than 64 levels"),
        (
            b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
            "request body nests JSON deeper than 64 levels",
        ),
        (b"[" * 100_000, "request body nests JSON deeper than 64 levels"),  # and unterminated
    ],
)
def test_parse_json_body_rejects_with_a_400(raw: bytes, message: str) -> None:
    with pytest.raises(ClientError) as info:
        parse_json_body(raw, max_depth=64)
    assert (info.value.status, info.value.code, info.value.param) == (400, "invalid_json", None)
    assert info.value.message.startswith(message), info.value.message


def test_parse_json_body_counts_depth_exactly() -> None:
    assert parse_json_body(b"[" * 64 + b"]" * 64, max_depth=64) == json.loads(b"[" * 64 + b"]" * 64)
    with pytest.raises(ClientError, match="nests JSON deeper than 64 levels") as info:
        parse_json_body(b'{"a": ' + b"[" * 64 + b"]" * 64 + b"}", max_depth=64)
    assert info.value.param == "a" + "[0]" * 63


def test_parse_json_body_rejects_escaped_lone_surrogates() -> None:
    with pytest.raises(ClientError) as info:
        parse_json_body(b'{"messages": [{"content": "\\ud83d"}]}', max_depth=64)
    assert info.value.param == "messages[0].content"
    assert parse_json_body(b'{"x": "\\ud83d\\ude00"}', max_depth=64) == {
        "x": "\U0001f600"
    }  # a pair is fine


def test_parse_json_body_accepts_a_byte_order_mark_and_any_bytes_like() -> None:
    assert parse_json_body("\ufeff{}".encode(), max_depth=64) == {}
    assert parse_json_body(bytearray(b"[1]"), max_depth=64) == [1]
    assert parse_json_body(memoryview(b'"x"'), max_depth=64) == "x"


def test_parse_then_validate_a_real_body() -> None:
    raw = json.dumps(FULL).encode()
    assert validate_chat_request(parse_json_body(raw, max_depth=64), limits=LIMITS) == FULL


# --- properties ------------------------------------------------------------------------------------------


def assert_guarantees(out: dict[str, Any], limits: RequestLimits) -> None:
    """An independent statement of BRIEF's "What request validation guarantees"."""
    assert isinstance(out["model"], str) and out["model"]
    messages = out["messages"]
    assert isinstance(messages, list) and 1 <= len(messages) <= limits.max_messages
    for message in messages:
        assert isinstance(message, dict) and message["role"] in ROLES
        content = message.get("content")
        assert isinstance(content, str | list) or (
            content is None and message["role"] == "assistant"
        )
        for part in content if isinstance(content, list) else []:
            assert isinstance(part, dict) and isinstance(part["type"], str)
            if part["type"] == "text":
                assert isinstance(part["text"], str)
            if part["type"] == "image_url":
                assert isinstance(part["image_url"]["url"], str)
                assert isinstance(part["image_url"].get("detail", ""), str)
        if message["role"] == "assistant" and "tool_calls" in message:
            for call in message["tool_calls"]:
                assert isinstance(call["id"], str) and call["type"] == "function"
                assert isinstance(call["function"]["name"], str)
                assert isinstance(call["function"]["arguments"], str)
        if message["role"] == "tool":
            assert isinstance(message["tool_call_id"], str)
    for key in ("stream", "parallel_tool_calls"):
        assert isinstance(out.get(key, False), bool)
    assert isinstance(out.get("stream_options", {}).get("include_usage", False), bool)
    for key in ("max_tokens", "max_completion_tokens", "n"):
        value = out.get(key, 1)
        assert isinstance(value, int) and not isinstance(value, bool) and value >= 1
    for key, high in (("temperature", 2), ("top_p", 1)):
        value = out.get(key, 0)
        assert isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= high
    stop = out.get("stop", "")
    assert isinstance(stop, str) or (
        isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop)
    )
    tools = out.get("tools", [])
    assert isinstance(tools, list) and len(tools) <= limits.max_tools
    for tool in tools:
        assert tool["type"] == "function" and isinstance(tool["function"]["name"], str)
        assert isinstance(tool["function"].get("description", ""), str)
        assert isinstance(tool["function"].get("parameters", {}), dict)
        assert isinstance(tool["function"].get("strict", True), bool)
    choice = out.get("tool_choice", "auto")
    assert choice in ("none", "auto", "required") or (
        choice["type"] == "function" and isinstance(choice["function"]["name"], str)
    )
    assert out.get("reasoning_effort", "low") in REASONING_EFFORTS
    assert isinstance(out.get("user", ""), str)
    assert isinstance(out.get("response_format", {"type": "text"})["type"], str)
    json.dumps(out, allow_nan=False).encode("utf-8")  # plain, finite, encodable JSON


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = sorted(
    {
        *FULL,
        "content",
        "role",
        "type",
        "function",
        "name",
        "text",
        "image_url",
        "url",
        "tool_calls",
        "tool_call_id",
        "include_usage",
        "arguments",
        "id",
    }
)


@st.composite
def mutated_bodies(draw: st.DrawFn) -> object:
    """FULL with one value somewhere replaced (or a key added/removed): mostly near-valid bodies."""
    value: Any = copy.deepcopy(FULL)
    node = value
    while isinstance(node, dict | list) and node and draw(st.booleans()):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        child = node[draw(st.sampled_from(keys))]
        if not isinstance(child, dict | list) or not child:
            break
        node = child
    if isinstance(node, dict):
        key = draw(st.sampled_from(FIELDS))
        if draw(st.booleans()) and key in node:
            del node[key]
        else:
            node[key] = draw(
                json_values
                | st.sampled_from(["function", "user", "assistant", "tool", "text", "image_url"])
            )
    elif isinstance(node, list) and node:
        node[draw(st.integers(0, len(node) - 1))] = draw(json_values)
    return value


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(json_values, mutated_bodies(), st.builds(body, metadata=json_values)))
def test_any_value_gives_a_guaranteed_dict_or_a_client_error(value: object) -> None:
    limits = RequestLimits(max_json_depth=6)
    try:
        out = validate_chat_request(value, limits=limits)
    except ClientError as exc:
        error = exc
    else:
        assert_guarantees(out, limits)
        return
    assert error.status == 400 and error.message


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), json_values.map(lambda v: json.dumps(v).encode())))
def test_any_bytes_give_a_json_value_or_a_client_error(raw: bytes) -> None:
    try:
        value = parse_json_body(raw, max_depth=5)
    except ClientError as exc:
        error = exc
    else:
        json.dumps(value, allow_nan=False).encode("utf-8")
        return
    assert error.status == 400 and error.message
