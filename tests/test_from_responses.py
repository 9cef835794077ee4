"""The Responses-inbound core (issue 19): a Responses request -> the neutral chat body, chat
chunks -> Responses stream events, a chat.completion -> a response object.

Golden cases per rule; the stream translator fed whole, one chunk at a time and in seeded random
splits; a hypothesis property for each direction; and the real openai SDK (its Responses stream
accumulator and its non-streaming parser, over an httpx2 MockTransport) as the judge.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import DATA, PROTOCOL, feed_in_pieces, sse_payloads
from trioproxy.errors import (
    ClientError,
    ProxyError,
    UntranslatableRequest,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from trioproxy.framing import error_body
from trioproxy.sse import SSEDecoder
from trioproxy.translate.base import StreamMeta
from trioproxy.translate.from_responses_request import (
    BUILTIN_TOOL_TYPES,
    ResponsesRequest,
    responses_request_to_chat,
)
from trioproxy.translate.from_responses_stream import (
    ChatToResponsesStream,
    ResponseMeta,
    chat_completion_to_response,
    error_event,
    responses_usage,
    sse_frame,
)
from trioproxy.translate.responses_response import translate_response
from trioproxy.translate.responses_stream import ResponsesStreamTranslator
from trioproxy.validate import RequestLimits, validate_chat_request

GOLDEN = DATA / "from_responses"
META = ResponseMeta("resp_0001", 1760000000, "client-model")


def to_chat(body: dict[str, Any]) -> ResponsesRequest:
    """Translate, and check the result is a valid chat request, as the face will."""
    request = responses_request_to_chat(body)
    validated = validate_chat_request(request.chat, limits=RequestLimits())
    assert validated == request.chat, "nothing for validation to normalise"
    return request


def refused(body: dict[str, Any]) -> ClientError:
    with pytest.raises(ClientError) as info:
        responses_request_to_chat(body)
    return info.value


def ask(**fields: Any) -> dict[str, Any]:
    return {"model": "demo", "input": "Hi", **fields}


# --- request: input --------------------------------------------------------------------------


def test_string_input_is_one_user_message() -> None:
    request = to_chat({"model": "demo", "input": "Hello"})
    assert request.chat == {"model": "demo", "messages": [{"role": "user", "content": "Hello"}]}
    assert request.stream is False


def test_instructions_become_the_first_system_message() -> None:
    request = to_chat(
        {
            "model": "demo",
            "instructions": "Be brief.",
            "input": [
                {"role": "system", "content": "Later rule."},
                {"role": "user", "content": "Q"},
            ],
        }
    )
    assert request.chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Later rule."},
        {"role": "user", "content": "Q"},
    ]
    assert request.echo["instructions"] == "Be brief."


def test_message_items_keep_role_and_order_and_map_their_parts() -> None:
    pdf = "data:application/pdf;base64,JVBERi0xLjQK"
    request = to_chat(
        ask(
            input=[
                {
                    "type": "message",
                    "role": "developer",
                    "content": [{"type": "input_text", "text": "D"}],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Look:"},
                        {
                            "type": "input_image",
                            "image_url": "https://x.test/a.png",
                            "detail": "low",
                        },
                        {"type": "input_image", "image_url": "data:image/png;base64,iVBO"},
                        {"type": "input_file", "file_data": pdf, "filename": "a.pdf"},
                    ],
                },
                {
                    "type": "message",
                    "id": "msg_1",
                    "status": "completed",
                    "role": "assistant",
                    "content": [
                        {"type": "output_text", "text": "Seen.", "annotations": []},
                        {"type": "refusal", "refusal": "Not that."},
                    ],
                },
            ]
        )
    )
    assert request.chat["messages"] == [
        {"role": "developer", "content": [{"type": "text", "text": "D"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look:"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://x.test/a.png", "detail": "low"},
                },
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                {"type": "file", "file": {"file_data": pdf, "filename": "a.pdf"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Seen."},
                {"type": "refusal", "refusal": "Not that."},
            ],
        },
    ]


def test_function_calls_join_the_assistant_turn_and_outputs_become_tool_messages() -> None:
    request = to_chat(
        ask(
            input=[
                {"role": "user", "content": "Weather in Oslo and Bergen?"},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Checking."}],
                },
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_1",
                    "name": "w",
                    "arguments": '{"c":"Oslo"}',
                },
                {
                    "type": "function_call",
                    "call_id": "call_2",
                    "name": "w",
                    "arguments": '{"c":"Bergen"}',
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "3 C"},
                {
                    "type": "function_call_output",
                    "call_id": "call_2",
                    "output": [{"type": "input_text", "text": "5 C"}],
                },
                {"type": "function_call", "call_id": "call_3", "name": "w", "arguments": "{}"},
            ]
        )
    )
    assert request.chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Checking."}],
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"c":"Oslo"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"c":"Bergen"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "3 C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "5 C"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_3", "type": "function", "function": {"name": "w", "arguments": "{}"}}
            ],
        },
    ]


def test_reasoning_items_ride_on_the_next_assistant_turn_as_reasoning_content() -> None:
    reasoning = {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "A"}, {"type": "summary_text", "text": "B"}],
        "encrypted_content": "gAAAA...",
    }
    request = to_chat(
        ask(
            input=[
                {"role": "user", "content": "Q"},
                reasoning,
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
                {**reasoning, "summary": [{"type": "summary_text", "text": "dropped"}]},
                {"role": "user", "content": "next"},
            ]
        )
    )
    messages = request.chat["messages"]
    assert messages[1]["reasoning_content"] == "A\n\nB"  # joined as MAPPING.md E P-RS1 joins them
    assert messages[1]["tool_calls"][0]["id"] == "c1"
    assert all("reasoning_content" not in m for m in messages[2:]), "reasoning before a user turn"
    assert "encrypted_content" not in json.dumps(request.chat)


def test_reasoning_round_trips_through_the_stream_translator() -> None:
    # What the stream hands out as a reasoning item comes back as the same reasoning_content.
    chunks = [
        chunk({"reasoning_content": "Step 1.\n\nStep 2."}),
        chunk({"content": "Done"}),
        finish("stop"),
    ]
    translator = ChatToResponsesStream(META)
    translator.feed(chunks)
    translator.finish()
    response = translator.response
    assert response is not None
    request = to_chat(ask(input=[{"role": "user", "content": "Q"}, *response["output"]]))
    assert request.chat["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Done"}],
        "reasoning_content": "Step 1.\n\nStep 2.",
    }


# --- request: top-level fields ---------------------------------------------------------------


def test_scalar_fields_map_to_their_chat_names() -> None:
    request = to_chat(
        ask(
            max_output_tokens=300,
            temperature=0.2,
            top_p=0.9,
            parallel_tool_calls=False,
            user="u-1",
            safety_identifier="s-1",
            prompt_cache_key="k",
            service_tier="flex",
            prompt_cache_retention="24h",
            metadata={"trace": "t1"},
            store=False,
            reasoning={"effort": "high", "summary": "auto"},
            stream=True,
            stream_options={"include_obfuscation": False},
        )
    )
    chat = request.chat
    assert chat["max_completion_tokens"] == 300
    assert (chat["temperature"], chat["top_p"], chat["parallel_tool_calls"]) == (0.2, 0.9, False)
    assert (chat["user"], chat["safety_identifier"], chat["prompt_cache_key"]) == (
        "u-1",
        "s-1",
        "k",
    )
    assert (chat["service_tier"], chat["prompt_cache_retention"]) == ("flex", "24h")
    assert chat["metadata"] == {"trace": "t1"}
    assert chat["reasoning_effort"] == "high"
    assert "store" not in chat, "the chat side is stateless anyway"
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert request.stream is True
    assert request.echo["reasoning"] == {"effort": "high", "summary": "auto"}
    assert request.echo["metadata"] == {"trace": "t1"}
    assert request.echo["max_output_tokens"] == 300


def test_nulls_mean_absent() -> None:
    request = to_chat(
        ask(
            instructions=None,
            temperature=None,
            tools=None,
            tool_choice=None,
            previous_response_id=None,
            store=None,
            reasoning=None,
            text=None,
            metadata=None,
        )
    )
    assert request.chat == {"model": "demo", "messages": [{"role": "user", "content": "Hi"}]}


def test_function_tools_and_tool_choice() -> None:
    tools = [
        {
            "type": "function",
            "name": "w",
            "description": "Weather",
            "parameters": {"type": "object"},
            "strict": True,
        },
        {"type": "function", "name": "x", "parameters": None, "strict": None},
    ]
    request = to_chat(ask(tools=tools, tool_choice={"type": "function", "name": "w"}))
    assert request.chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "w",
                "description": "Weather",
                "parameters": {"type": "object"},
                "strict": True,
            },
        },
        # Omitted strict stays omitted: Responses falls back to non-strict for loose schemas,
        # which a chat upstream's default (non-strict) matches.
        {"type": "function", "function": {"name": "x"}},
    ]
    assert request.chat["tool_choice"] == {"type": "function", "function": {"name": "w"}}
    assert request.echo["tools"][1] == {
        "type": "function",
        "name": "x",
        "description": None,
        "parameters": None,
        "strict": None,
    }
    for mode in ("auto", "none", "required"):
        assert to_chat(ask(tools=tools, tool_choice=mode)).chat["tool_choice"] == mode


@pytest.mark.parametrize(
    "kind", ["web_search", "file_search", "computer_use_preview", "code_interpreter", "mcp"]
)
def test_builtin_tools_are_a_400_naming_the_tool(kind: str) -> None:
    assert kind in BUILTIN_TOOL_TYPES
    error = refused(ask(tools=[{"type": "function", "name": "f"}, {"type": kind}]))
    assert isinstance(error, UntranslatableRequest)
    assert (error.status, error.code, error.param) == (
        400,
        "unsupported_parameter",
        "tools[1].type",
    )
    assert repr(kind) in error.message


def test_builtin_tool_choice_is_a_400() -> None:
    error = refused(ask(tool_choice={"type": "file_search"}))
    assert (error.code, error.param) == ("unsupported_parameter", "tool_choice")


def test_text_format_maps_to_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    request = to_chat(
        ask(
            text={
                "format": {"type": "json_schema", "name": "A", "schema": schema, "strict": True},
                "verbosity": "low",
            }
        )
    )
    assert request.chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "A", "schema": schema, "strict": True},
    }
    assert request.chat["verbosity"] == "low"
    assert request.echo["text"]["format"]["name"] == "A"
    assert to_chat(ask(text={"format": {"type": "json_object"}})).chat["response_format"] == {
        "type": "json_object"
    }
    assert "response_format" not in to_chat(ask(text={"format": {"type": "text"}})).chat
    assert (
        refused(ask(text={"format": {"type": "json_schema", "schema": schema}})).param
        == "text.format.name"
    )


def test_include_logprobs_asks_for_chat_logprobs_and_other_includes_are_accepted() -> None:
    chat = to_chat(ask(include=["message.output_text.logprobs"], top_logprobs=3)).chat
    assert (chat["logprobs"], chat["top_logprobs"]) == (True, 3)
    # Codex always asks for encrypted reasoning; a translated upstream has none to give.
    chat = to_chat(ask(include=["reasoning.encrypted_content"], top_logprobs=3)).chat
    assert "logprobs" not in chat and "top_logprobs" not in chat


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"store": True}, "store"),
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"context_management": [{"type": "compaction"}]}, "context_management"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [{"type": "input_image", "file_id": "file_1", "detail": "auto"}],
                    }
                ]
            },
            "input[0].content[0].file_id",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]},
            "input[0].content[0].file_id",
        ),
    ],
)
def test_server_side_state_is_a_400_that_says_to_send_the_full_input(
    fields: dict[str, Any], param: str
) -> None:
    error = refused(ask(**fields))
    assert isinstance(error, UntranslatableRequest)
    assert (error.status, error.code, error.param) == (400, "unsupported_parameter", param)
    if param != "input[0].content[0].file_id":
        assert "send the full conversation in input" in error.message


def test_store_false_and_background_false_are_accepted() -> None:
    assert to_chat(ask(store=False, background=False)).echo["store"] is False


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"model": None}, "model", "missing_required_parameter"),
        ({"model": 3}, "model", "invalid_type"),
        ({"input": None}, "input", "missing_required_parameter"),
        ({"input": 3}, "input", "invalid_type"),
        ({"input": []}, "input", "empty_array"),
        ({"input": [3]}, "input[0]", "invalid_type"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", "invalid_value"),
        ({"input": [{"role": "user", "content": 3}]}, "input[0].content", "invalid_type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "input[0].content[0].text",
            "invalid_type",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "input[0].content[0].type",
            "unsupported_parameter",
        ),
        (
            {
                "input": [
                    {
                        "role": "system",
                        "content": [{"type": "input_image", "image_url": "https://x"}],
                    }
                ]
            },
            "input[0].content[0]",
            "unsupported_parameter",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "detail": "auto"}]}]},
            "input[0].content[0].image_url",
            "missing_required_parameter",
        ),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}],
                    }
                ]
            },
            "input[0].content[0].file_url",
            "unsupported_parameter",
        ),
        (
            {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]},
            "input[0].arguments",
            "invalid_type",
        ),
        (
            {"input": [{"type": "function_call_output", "output": "x"}]},
            "input[0].call_id",
            "invalid_type",
        ),
        (
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_image", "image_url": "https://x"}],
                    }
                ]
            },
            "input[0].output[0]",
            "unsupported_parameter",
        ),
        (
            {"input": [{"type": "web_search_call", "id": "ws_1"}]},
            "input[0].type",
            "unsupported_parameter",
        ),
        ({"instructions": ["x"]}, "instructions", "invalid_type"),
        ({"temperature": "hot"}, "temperature", "invalid_type"),
        ({"temperature": 3}, "temperature", "invalid_value"),
        ({"top_p": 2}, "top_p", "invalid_value"),
        ({"max_output_tokens": 0}, "max_output_tokens", "invalid_value"),
        ({"max_output_tokens": True}, "max_output_tokens", "invalid_type"),
        ({"parallel_tool_calls": "yes"}, "parallel_tool_calls", "invalid_type"),
        ({"stream": "yes"}, "stream", "invalid_type"),
        ({"store": "no"}, "store", "invalid_type"),
        ({"metadata": {"k": 1}}, "metadata.k", "invalid_type"),
        ({"metadata": {str(i): "v" for i in range(17)}}, "metadata", "invalid_value"),
        ({"tools": {"type": "function"}}, "tools", "invalid_type"),
        ({"tools": [{"type": "function"}]}, "tools[0].name", "invalid_type"),
        (
            {"tools": [{"type": "function", "name": "f", "parameters": "x"}]},
            "tools[0].parameters",
            "invalid_type",
        ),
        ({"tool_choice": "always"}, "tool_choice", "invalid_value"),
        ({"tool_choice": {"type": "function"}}, "tool_choice.name", "invalid_type"),
        ({"text": {"format": {"type": "xml"}}}, "text.format.type", "invalid_value"),
        ({"text": {"colour": "red"}}, "text.colour", "unknown_parameter"),
        ({"reasoning": {"effort": "huge"}}, "reasoning.effort", "invalid_value"),
        ({"reasoning": {"summary": "long"}}, "reasoning.summary", "invalid_value"),
        ({"reasoning": {"context": "all_turns"}}, "reasoning.context", "unsupported_parameter"),
        ({"include": "x"}, "include", "invalid_type"),
        ({"top_logprobs": 21}, "top_logprobs", "invalid_value"),
        ({"truncation": "auto"}, "truncation", "unsupported_parameter"),
        (
            {"stream_options": {"include_usage": True}},
            "stream_options.include_usage",
            "unknown_parameter",
        ),
        ({"moderation": {"model": "omni"}}, "moderation", "unsupported_parameter"),
        ({"frequency_penalty": 1}, "frequency_penalty", "unknown_parameter"),
    ],
)
def test_bad_fields_are_400s_naming_the_field(
    fields: dict[str, Any], param: str, code: str
) -> None:
    error = refused(ask(**fields))
    assert (error.status, error.param, error.code) == (400, param, code)
    assert error_body(error)["error"]["param"] == param


def test_a_body_that_is_not_an_object_is_a_400() -> None:
    error = refused([1, 2])  # type: ignore[arg-type]
    assert (error.status, error.code) == (400, "invalid_type")


def test_the_callers_body_is_not_changed() -> None:
    body = ask(
        input=[{"role": "user", "content": [{"type": "input_text", "text": "x"}]}], stream=True
    )
    before = json.dumps(body)
    responses_request_to_chat(body)
    assert json.dumps(body) == before


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 30)
    | st.floats(-1, 3, allow_nan=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["model", "input", "instructions", "tools", "tool_choice", "text", "reasoning", "include",
     "metadata", "temperature", "max_output_tokens", "store", "stream", "truncation", "user"]
)  # fmt: skip
item_shapes = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "function_call", "function_call_output", "reasoning"])},
    optional={
        "role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]),
        "content": json_values,
        "call_id": json_values,
        "name": json_values,
        "arguments": json_values,
        "output": json_values,
        "summary": json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=st.dictionaries(field_names, json_values, max_size=6),
    items=st.lists(item_shapes, max_size=4),
)
def test_any_body_is_a_valid_chat_request_or_a_client_error(
    fields: dict[str, Any], items: list[dict[str, Any]]
) -> None:
    body = {"model": "demo", "input": items or "x", **fields}
    errors: list[ClientError] = []
    try:
        request = responses_request_to_chat(body)
        # Validation may still refuse (it checks what it checks), but only with a 400.
        validate_chat_request(request.chat, limits=RequestLimits())
    except ClientError as exc:
        errors.append(exc)
    for error in errors:
        assert error.status == 400
        assert error.param is None or isinstance(error.param, str)


# --- stream: helpers -------------------------------------------------------------------------


def chunk(delta: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1760000000,
        "model": "upstream-model",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None, **extra}],
        "usage": None,
    }


def finish(reason: str) -> dict[str, Any]:
    return chunk({}, finish_reason=reason)


def usage_chunk(prompt: int = 11, completion: int = 7, **details: Any) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        **details,
    }
    return {**chunk({}), "choices": [], "usage": usage}


def chat_sse_chunks(path: str) -> list[dict[str, Any]]:
    payloads = sse_payloads((PROTOCOL / path).read_bytes())
    return [p for p in payloads if p != "[DONE]"]


def run(chunks: list[dict[str, Any]], meta: ResponseMeta = META) -> list[dict[str, Any]]:
    """Events for `chunks` fed whole, one chunk at a time and in random splits (all equal)."""
    first, *others = feed_in_pieces(lambda: ChatToResponsesStream(meta), chunks)  # type: ignore[arg-type]
    for other in others:
        assert other == first
    assert_event_contract(first)
    return first


def assert_event_contract(events: list[dict[str, Any]]) -> None:
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    terminal = {"response.completed", "response.incomplete", "response.failed"}
    ends = [i for i, e in enumerate(events) if e["type"] in terminal]
    assert len(ends) == 1
    added: set[int] = set()
    done: set[int] = set()
    for event in events:
        if event["type"] == "response.output_item.added":
            assert event["output_index"] == len(added), "output_index counts from 0"
            added.add(event["output_index"])
        elif event["type"] == "response.output_item.done":
            assert event["output_index"] in added and event["output_index"] not in done
            done.add(event["output_index"])
        elif "output_index" in event:
            assert event["output_index"] in added - done, f"{event['type']} outside its item"
    if events[ends[0]]["type"] != "response.failed":
        assert ends[0] == len(events) - 1
        assert done == added, "every item is ended"
        assert len(events[-1]["response"]["output"]) == len(added)


TEXT = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo"}),
    finish("stop"),
    usage_chunk(),
]
TOOLS = [
    chunk({"role": "assistant", "content": None}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_A",
                    "type": "function",
                    "function": {"name": "w", "arguments": ""},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"c":'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_B",
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"c":"Bergen"}'},
                }
            ]
        }
    ),
    finish("tool_calls"),
    usage_chunk(
        20,
        30,
        completion_tokens_details={"reasoning_tokens": 12},
        prompt_tokens_details={"cached_tokens": 8},
    ),
]


# --- stream: golden transcripts --------------------------------------------------------------


@pytest.mark.parametrize("name", ["text", "tools"])
def test_golden_event_stream(name: str) -> None:
    chunks = {"text": TEXT, "tools": TOOLS}[name]
    events = run(chunks)
    lines = (GOLDEN / f"stream_{name}.expected.jsonl").read_text(encoding="utf-8").split("\n")
    assert events == [json.loads(line) for line in lines if line]


def test_item_ids_derive_from_the_response_id() -> None:
    events = run(TOOLS, ResponseMeta("resp_XYZ", 1, "m"))
    added = [e["item"]["id"] for e in events if e["type"] == "response.output_item.added"]
    assert added == ["fc_XYZ_0", "fc_XYZ_1"]
    assert all(e["response"]["id"] == "resp_XYZ" for e in events if "response" in e)


def test_the_upstreams_model_is_reported_from_the_first_chunk() -> None:
    events = run(TEXT)
    assert {e["response"]["model"] for e in events if "response" in e} == {"upstream-model"}


def test_reasoning_becomes_a_reasoning_item_with_one_summary_part() -> None:
    events = run(
        [
            chunk({"reasoning_content": "Think"}),
            chunk({"reasoning_content": "ing."}),
            chunk({"content": "A"}),
            finish("stop"),
        ]
    )
    types = [e["type"] for e in events]
    assert types[2:] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    output = events[-1]["response"]["output"]
    assert output[0] == {
        "id": "rs_0001_0",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "Thinking."}],
    }
    assert events[-1]["response"]["usage"] is None, "no usage chunk came"


def test_openrouter_style_reasoning_is_read_too() -> None:
    events = run([chunk({"reasoning": "R"}), finish("stop")])
    assert events[-1]["response"]["output"][0]["summary"][0]["text"] == "R"


@pytest.mark.parametrize(
    ("reason", "detail"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_length_and_content_filter_end_incomplete(reason: str, detail: str) -> None:
    events = run([chunk({"content": "Cut"}), finish(reason), usage_chunk()])
    last = events[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["status"] == "incomplete"
    assert last["response"]["incomplete_details"] == {"reason": detail}
    assert last["response"]["output"][0]["status"] == "incomplete"


def test_refusal_is_a_refusal_part() -> None:
    events = run([chunk({"content": "I"}), chunk({"refusal": "No."}), finish("stop")])
    types = [e["type"] for e in events]
    assert "response.refusal.delta" in types and "response.refusal.done" in types
    assert events[-1]["response"]["output"][0]["content"] == [
        {"type": "output_text", "annotations": [], "logprobs": [], "text": "I"},
        {"type": "refusal", "refusal": "No."},
    ]


def test_text_after_a_tool_call_opens_a_new_message_and_ends_the_call() -> None:
    events = run([*TOOLS[:2], chunk({"content": "then text"}), finish("tool_calls")])
    output = events[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["function_call", "message"]
    assert output[0]["status"] == "completed"


def test_parallel_calls_are_items_one_after_the_other() -> None:
    events = run(TOOLS)
    order = [(e["type"], e["output_index"]) for e in events if "output_item" in e["type"]]
    assert order == [
        ("response.output_item.added", 0),
        ("response.output_item.done", 0),
        ("response.output_item.added", 1),
        ("response.output_item.done", 1),
    ]


def test_interleaved_tool_call_fragments_are_a_protocol_error_not_lost() -> None:
    translator = ChatToResponsesStream(META)
    with pytest.raises(UpstreamProtocolError, match="interleaved"):
        translator.feed(
            [
                chunk(
                    {
                        "tool_calls": [
                            {"index": 0, "id": "a", "function": {"name": "f", "arguments": "{"}}
                        ]
                    }
                ),
                chunk(
                    {
                        "tool_calls": [
                            {"index": 1, "id": "b", "function": {"name": "g", "arguments": "["}}
                        ]
                    }
                ),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}),
            ]
        )


def test_logprobs_reach_the_text_deltas_and_the_part() -> None:
    entry = {
        "token": "Hi",
        "logprob": -0.1,
        "bytes": [72, 105],
        "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}],
    }
    events = run([chunk({"content": "Hi"}, logprobs={"content": [entry]}), finish("stop")])
    delta = next(e for e in events if e["type"] == "response.output_text.delta")
    assert delta["logprobs"] == [
        {"token": "Hi", "logprob": -0.1, "top_logprobs": [{"token": "Hi", "logprob": -0.1}]}
    ]
    assert events[-1]["response"]["output"][0]["content"][0]["logprobs"] == [entry]


def test_usage_maps_back_to_responses_names() -> None:
    usage = {
        "prompt_tokens": 20,
        "completion_tokens": 30,
        "total_tokens": 50,
        "prompt_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 12},
    }
    assert responses_usage(usage) == {
        "input_tokens": 20,
        "input_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 4},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 12},
        "total_tokens": 50,
    }
    assert responses_usage({"prompt_tokens": 1, "completion_tokens": 2})["total_tokens"] == 3


def test_finish_can_take_the_usage_from_the_caller() -> None:
    translator = ChatToResponsesStream(META)
    translator.feed([chunk({"content": "x"}), finish("stop")])
    last = translator.finish({"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5})[-1]
    assert last["response"]["usage"]["total_tokens"] == 5


def test_echo_fills_the_response_object() -> None:
    request = to_chat(
        ask(
            instructions="I",
            tools=[{"type": "function", "name": "f"}],
            metadata={"a": "b"},
            temperature=0.5,
        )
    )
    meta = ResponseMeta("resp_1", 5, "demo", request.echo)
    events = run(TEXT, meta)
    response = events[-1]["response"]
    assert (response["instructions"], response["metadata"], response["temperature"]) == (
        "I",
        {"a": "b"},
        0.5,
    )
    assert response["tools"][0]["name"] == "f"
    assert response["store"] is False and response["created_at"] == 5


def test_finish_without_a_finish_reason_is_a_protocol_error() -> None:
    translator = ChatToResponsesStream(META)
    translator.feed([chunk({"content": "trunc"})])
    with pytest.raises(UpstreamProtocolError):
        translator.finish()
    with pytest.raises(UpstreamProtocolError):
        ChatToResponsesStream(META).finish()


def test_fail_ends_with_response_failed_then_an_error_event() -> None:
    translator = ChatToResponsesStream(META)
    events = translator.feed([chunk({"content": "part"})])
    error = UpstreamTimeout("upstream: no data within the read timeout")
    events += translator.fail(error)
    assert_event_contract(events)
    failed, err = events[-2:]
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": "upstream_timeout", "message": error.message}
    assert failed["response"]["output"][0]["status"] == "incomplete"
    assert failed["response"]["output"][0]["content"][0]["text"] == "part"
    assert err == {
        "type": "error",
        "sequence_number": failed["sequence_number"] + 1,
        "code": "upstream_timeout",
        "message": error.message,
        "param": None,
        "error": error_body(error)["error"],
    }
    assert translator.done and translator.fail(error) == [] and translator.feed(TEXT) == []
    assert error_event(error, 7)["sequence_number"] == 7


def test_fail_before_any_chunk_still_opens_the_response() -> None:
    events = ChatToResponsesStream(META).fail(UpstreamProtocolError("x"))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.failed",
        "error",
    ]


@pytest.mark.parametrize(
    "bad",
    [
        "not a dict",
        {"choices": "x"},
        {"choices": [{"index": 1, "delta": {"content": "x"}}]},
        {"choices": [{"index": 0, "delta": {"content": 3}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
                }
            ]
        },
        {
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"id": "c", "function": {"name": "f"}}]}}
            ]
        },
        {"choices": [], "usage": 3},
    ],
)
def test_malformed_chunks_are_protocol_errors(bad: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        ChatToResponsesStream(META).feed([bad])


def test_output_after_the_finish_is_a_protocol_error() -> None:
    translator = ChatToResponsesStream(META)
    with pytest.raises(UpstreamProtocolError):
        translator.feed([finish("stop"), chunk({"content": "late"})])


def test_sse_frame_names_the_event_and_carries_one_data_line() -> None:
    event = {"type": "response.output_text.delta", "sequence_number": 3, "delta": "a\nb\u2028"}
    assert sse_frame(event) == (
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        b'"sequence_number":3,"delta":"a\\nb\xe2\x80\xa8"}\n\n'
    )
    decoded = SSEDecoder().feed(sse_frame(event))
    assert [(e.event, json.loads(e.data)) for e in decoded] == [(event["type"], event)]


chunk_deltas: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.fixed_dictionaries({"content": st.text(max_size=4)}),
    st.fixed_dictionaries({"reasoning_content": st.text(max_size=4)}),
    st.fixed_dictionaries({"refusal": st.text(max_size=4)}),
    st.fixed_dictionaries(
        {
            "tool_calls": st.lists(
                st.fixed_dictionaries(
                    {"index": st.integers(0, 2)},
                    optional={
                        "id": st.sampled_from(["a", "b"]),
                        "function": st.fixed_dictionaries(
                            {},
                            optional={
                                "name": st.sampled_from(["f", "g"]),
                                "arguments": st.text(max_size=3),
                            },
                        ),
                    },
                ),
                max_size=2,
            )
        }
    ),
    st.just({}),
)
well_formed_chunk = st.builds(
    lambda delta, reason: chunk(delta, finish_reason=reason),
    chunk_deltas,
    st.none() | st.sampled_from(["stop", "length", "tool_calls", "content_filter"]),
) | st.builds(lambda n: usage_chunk(n, n), st.integers(0, 50))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(well_formed_chunk, max_size=12), st.integers(0, 3))
def test_any_chunk_list_gives_events_or_a_proxy_error(
    chunks: list[dict[str, Any]], seed: int
) -> None:
    try:
        results = feed_in_pieces(lambda: ChatToResponsesStream(META), chunks, seeds=(seed,))  # type: ignore[arg-type]
    except ProxyError:
        return
    first = results[0]
    assert all(result == first for result in results)
    if chunks:
        assert_event_contract(first)
        for event in first:
            sse_frame(event)  # always serialisable


# --- the openai SDK as the judge --------------------------------------------------------------


def sdk_client(body: bytes, content_type: str) -> openai.OpenAI:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": content_type}, content=body)

    return openai.OpenAI(
        api_key="test",
        base_url="http://proxy.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def stream_client(events: list[dict[str, Any]]) -> openai.OpenAI:
    return sdk_client(b"".join(sse_frame(e) for e in events), "text/event-stream")


def test_sdk_stream_helper_accumulates_text_and_usage() -> None:
    client = stream_client(run(TEXT))
    with client.responses.stream(model="demo", input="Hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["Hel", "lo"]
    assert final.output_text == "Hello"
    assert final.id == "resp_0001" and final.status == "completed"
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.total_tokens) == (
        11,
        7,
        18,
    )


def test_sdk_stream_helper_accumulates_function_calls() -> None:
    client = stream_client(run(TOOLS))
    with client.responses.stream(model="demo", input="Hi") as stream:
        arg_deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert arg_deltas == ['{"c":', '"Oslo"}', '{"c":"Bergen"}']
    calls = [(o.call_id, o.name, o.arguments) for o in final.output if o.type == "function_call"]
    assert calls == [("call_A", "w", '{"c":"Oslo"}'), ("call_B", "w", '{"c":"Bergen"}')]
    assert final.usage is not None
    assert final.usage.input_tokens_details.cached_tokens == 8
    assert final.usage.output_tokens_details.reasoning_tokens == 12


@pytest.mark.parametrize(
    "path",
    [
        "openai_chat/from_anthropic/stream_thinking_text.sse",
        "openai_chat/from_anthropic/stream_tool_calls.sse",
        "openai_chat/from_anthropic/stream_text_include_usage.sse",
        "openai_chat/from_responses/stream_function_call.sse",
        "openai_chat/from_responses/stream_text_include_usage.sse",
    ],
)
def test_sdk_reads_the_shared_chat_fixtures_translated(path: str) -> None:
    chunks = chat_sse_chunks(path)
    events = run(chunks)
    client = stream_client(events)
    with client.responses.stream(model="demo", input="Hi") as stream:
        final = stream.get_final_response()
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    reasoning = "".join(
        c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"]
    )
    assert final.output_text == text
    summaries = [s.text for o in final.output if o.type == "reasoning" for s in o.summary]
    assert "".join(summaries) == reasoning
    calls: dict[int, list[str]] = {}
    for c in chunks:
        for call in (c["choices"][0]["delta"].get("tool_calls") or []) if c["choices"] else []:
            entry = calls.setdefault(call["index"], ["", "", ""])
            entry[0] = call.get("id", entry[0]) or entry[0]
            entry[1] = call.get("function", {}).get("name", entry[1]) or entry[1]
            entry[2] += call.get("function", {}).get("arguments", "")
    got = [[o.call_id, o.name, o.arguments] for o in final.output if o.type == "function_call"]
    assert got == [calls[i] for i in sorted(calls)]
    usage = next((c["usage"] for c in chunks if c.get("usage")), None)
    if usage is not None:
        assert final.usage is not None and final.usage.total_tokens == usage["total_tokens"]


def test_sdk_low_level_stream_yields_typed_events() -> None:
    client = stream_client(run(TOOLS))
    events = list(client.responses.create(model="demo", input="Hi", stream=True))
    assert [type(e).__name__ for e in events[:3]] == [
        "ResponseCreatedEvent",
        "ResponseInProgressEvent",
        "ResponseOutputItemAddedEvent",
    ]
    assert type(events[-1]).__name__ == "ResponseCompletedEvent"
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [e.arguments for e in done] == ['{"c":"Oslo"}', '{"c":"Bergen"}']


def test_sdk_raises_on_a_failed_stream_after_seeing_response_failed() -> None:
    translator = ChatToResponsesStream(META)
    events = translator.feed([chunk({"content": "part"})]) + translator.fail(
        UpstreamTimeout("upstream: no data within the read timeout")
    )
    client = stream_client(events)
    seen: list[str] = []

    def read() -> None:
        for event in client.responses.create(model="demo", input="Hi", stream=True):
            seen.append(event.type)

    with pytest.raises(openai.APIError, match="no data within the read timeout") as info:
        read()
    assert seen[-1] == "response.failed"
    assert info.value.code == "upstream_timeout"


def test_sdk_sees_an_incomplete_stream_as_incomplete() -> None:
    client = stream_client(run([chunk({"content": "Cut"}), finish("length"), usage_chunk()]))
    events = list(client.responses.create(model="demo", input="Hi", stream=True))
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.output_text == "Cut"


# --- non-streaming ---------------------------------------------------------------------------


def test_chat_completion_becomes_a_response_object() -> None:
    completion = json.loads(
        (PROTOCOL / "openai_chat/from_anthropic/nonstream_tool_calls.json").read_text()
    )
    response = chat_completion_to_response(completion, META)
    assert response["object"] == "response" and response["status"] == "completed"
    assert "output_text" not in response, "output_text is an SDK property, not a wire field"
    assert [o["type"] for o in response["output"]] == ["message", "function_call", "function_call"]
    assert (
        response["output"][0]["content"][0]["text"]
        == completion["choices"][0]["message"]["content"]
    )
    assert response["usage"]["input_tokens"] == completion["usage"]["prompt_tokens"]
    client = sdk_client(json.dumps(response).encode(), "application/json")
    parsed = client.responses.create(model="demo", input="Hi")
    assert parsed.output_text == "I'll check both cities."
    calls = [(o.call_id, o.arguments) for o in parsed.output if o.type == "function_call"]
    expected = [
        (c["id"], c["function"]["arguments"])
        for c in completion["choices"][0]["message"]["tool_calls"]
    ]
    assert calls == expected
    assert (
        parsed.usage is not None
        and parsed.usage.total_tokens == completion["usage"]["total_tokens"]
    )


def test_non_streaming_equals_the_streams_final_response() -> None:
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "upstream-model",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello",
                    "reasoning_content": "R",
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }
    streamed = run(
        [
            chunk({"reasoning_content": "R"}),
            chunk({"content": "Hello"}),
            finish("length"),
            usage_chunk(),
        ]
    )
    assert chat_completion_to_response(completion, META) == streamed[-1]["response"]


def test_responses_round_trip_through_the_chat_form_keeps_text_and_usage() -> None:
    # A Responses upstream answer -> chat (the existing translator) -> Responses again.
    original = json.loads((PROTOCOL / "openai_responses/nonstream_text.json").read_text())
    completion = translate_response(json.dumps(original).encode(), StreamMeta("chatcmpl-1", 1, "m"))
    again = chat_completion_to_response(completion, META)
    assert again["output"][0]["content"][0]["text"] == original["output"][0]["content"][0]["text"]
    assert again["usage"] == original["usage"]
    assert again["model"] == original["model"]


def test_stream_round_trip_through_the_chat_form_keeps_the_calls() -> None:
    raw = (PROTOCOL / "openai_responses/stream_function_call.sse").read_bytes()
    upstream = ResponsesStreamTranslator(StreamMeta("chatcmpl-1", 1, "m", include_usage=True))
    chunks = [c for e in SSEDecoder().feed(raw) for c in upstream.feed(e)] + upstream.finish()
    events = run(chunks)
    original = json.loads(raw.decode().split("data: ")[-1])["response"]
    final = events[-1]["response"]
    pick = [
        (o["call_id"], o["name"], o["arguments"])
        for o in original["output"]
        if o["type"] == "function_call"
    ]
    assert [(o["call_id"], o["name"], o["arguments"]) for o in final["output"]] == pick
    assert final["usage"] == original["usage"]


def test_a_completion_without_one_choice_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        chat_completion_to_response({"choices": []}, META)
    with pytest.raises(UpstreamProtocolError):
        chat_completion_to_response({"choices": [{"message": "x"}]}, META)


# --- the doc is complete ---------------------------------------------------------------------


def _create_param_names() -> list[str]:
    from openai.types.responses.response_create_params import ResponseCreateParamsBase

    return sorted(ResponseCreateParamsBase.__annotations__)


@pytest.mark.parametrize("name", _create_param_names())
def test_every_sdk_request_field_is_documented_and_never_a_crash(name: str) -> None:
    doc = (DATA.parent.parent / "docs/translation-responses-inbound.md").read_text(encoding="utf-8")
    assert f"`{name}`" in doc, f"docs/translation-responses-inbound.md does not cover {name}"
    if name in ("model", "input"):
        return
    errors: list[ClientError] = []
    for value in (True, "x", 7, {"k": "v"}, [{"type": "x"}]):
        try:
            to_chat(ask(**{name: value}))
        except ClientError as exc:
            errors.append(exc)
    for error in errors:
        assert error.status == 400
        assert error.param is not None and error.param.split(".")[0].split("[")[0] == name
