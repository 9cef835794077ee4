"""`response_format: {"type": "json_object"}` on Anthropic models (issue 20.3): `[model:*]
json_mode = tool | instruction | off`. The request each mode sends, the answer side (the JSON
tool's call becomes content; prose is never passed off as JSON), the config key, and end to end
through the official openai SDK against a fake Anthropic upstream that records the request."""

from __future__ import annotations

import json
from functools import partial
from typing import TYPE_CHECKING, Any

import openai
import pytest
import trio

from tests.conftest import config_from
from tests.fakes import FakeUpstream, json_reply, sse_reply
from tests.support import feed_in_pieces, sdk_final
from trioproxy.errors import (
    ClientError,
    ConfigError,
    ProxyError,
    UntranslatableRequest,
    UpstreamProtocolError,
)
from trioproxy.framing import error_body
from trioproxy.server import serve
from trioproxy.sse import SSEDecoder
from trioproxy.translate.anthropic import AnthropicDialect
from trioproxy.translate.anthropic_request import JSON_INSTRUCTION, JSON_TOOL
from trioproxy.translate.base import ModelDefaults, StreamMeta, Target

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

ASK = [{"role": "user", "content": "Give me a JSON object with the capital of France."}]
JSON_OBJECT = {"type": "json_object"}
ANSWER = {"capital": "Paris", "country": "France", "tags": ["city", "été"]}
META = StreamMeta("chatcmpl-json", 1760000000, "claude")
CHECKED = StreamMeta("chatcmpl-json", 1760000000, "claude", json_object=True)


def target(mode: str = "tool", **defaults: Any) -> Target:
    return Target("claude-sonnet-4-5", ModelDefaults(json_mode=mode, **defaults))


def upstream_body(mode: str = "tool", **fields: Any) -> dict[str, Any]:
    body = {"model": "claude", "messages": ASK, "response_format": JSON_OBJECT, **fields}
    request = AnthropicDialect().build_request(body, target(mode))
    result: dict[str, Any] = json.loads(request.body)
    return result


# --- the Anthropic answers a fake upstream sends -------------------------------------------------


def _events(*events: dict[str, Any]) -> bytes:
    return b"".join(
        f"event: {e['type']}\ndata: {json.dumps(e, ensure_ascii=False)}\n\n".encode()
        for e in events
    )


def _start() -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": 20, "output_tokens": 1},
        },
    }


def _end(stop_reason: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    ]


def tool_stream(fragments: list[str], *, stop_reason: str = "tool_use") -> bytes:
    """A json_mode = tool answer as Anthropic streams it: the forced call, its input in pieces."""
    block = {"type": "tool_use", "id": "toolu_01", "name": JSON_TOOL, "input": {}}
    deltas = [
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": f},
        }
        for f in ["", *fragments]
    ]
    return _events(
        _start(),
        {"type": "content_block_start", "index": 0, "content_block": block},
        *deltas,
        {"type": "content_block_stop", "index": 0},
        *_end(stop_reason),
    )


def text_stream(*texts: str, stop_reason: str = "end_turn", tool: bool = False) -> bytes:
    """A text answer (json_mode = instruction), optionally followed by a client tool call."""
    events: list[dict[str, Any]] = [
        _start(),
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    events += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
        for t in texts
    ]
    events.append({"type": "content_block_stop", "index": 0})
    if tool:
        events += [
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_02",
                    "name": "get_weather",
                    "input": {},
                },
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"city": "Paris"}'},
            },
            {"type": "content_block_stop", "index": 1},
        ]
    return _events(*events, *_end("tool_use" if tool else stop_reason))


def message(content: list[dict[str, Any]], stop_reason: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 9},
    }


def tool_message(tool_input: Any) -> dict[str, Any]:
    block = {"type": "tool_use", "id": "toolu_01", "name": JSON_TOOL, "input": tool_input}
    return message([block], "tool_use")


def text_message(text: str, stop_reason: str = "end_turn") -> dict[str, Any]:
    return message([{"type": "text", "text": text}], stop_reason)


class Pipeline:
    """bytes -> SSEDecoder -> the Anthropic stream translator, as the engine chains them; a
    ProxyError ends the output with the error envelope the client would get."""

    def __init__(self, meta: StreamMeta) -> None:
        self.decoder = SSEDecoder()
        self.translator = AnthropicDialect().stream_translator(meta)
        self.failed = False

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        return self._run(lambda: self.decoder.feed(data), finish=False)

    def finish(self) -> list[dict[str, Any]]:
        return self._run(self.decoder.finish, finish=True)

    def _run(self, events: Any, *, finish: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.failed:
            return out
        try:
            for event in events():
                out += self.translator.feed(event)
            if finish:
                out += self.translator.finish()
        except ProxyError as exc:
            self.failed = True
            out.append({**error_body(exc), "status": exc.status})
        return out


def replay(raw: bytes, meta: StreamMeta = META) -> list[dict[str, Any]]:
    first, *others = feed_in_pieces(lambda: Pipeline(meta), raw)
    assert all(other == first for other in others)  # however the bytes were split
    return first


def content_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )


# --- json_mode = tool: the request ---------------------------------------------------------------


def test_tool_mode_forces_one_call_of_a_tool_that_takes_any_object() -> None:
    sent = upstream_body("tool")
    assert sent["tools"] == [
        {
            "name": JSON_TOOL,
            "description": sent["tools"][0]["description"],
            "input_schema": {"type": "object"},
        }
    ]
    assert sent["tool_choice"] == {
        "type": "tool",
        "name": JSON_TOOL,
        "disable_parallel_tool_use": True,
    }
    # structured outputs cannot take an open object schema; nothing else is added
    assert "output_config" not in sent
    assert "system" not in sent
    assert sent["messages"] == [{"role": "user", "content": ASK[0]["content"]}]


def test_tool_mode_is_the_default() -> None:
    assert ModelDefaults().json_mode == "tool"
    body = {"model": "claude", "messages": ASK, "response_format": JSON_OBJECT}
    sent = json.loads(AnthropicDialect().build_request(body, Target("claude-x")).body)
    assert sent["tool_choice"]["name"] == JSON_TOOL


def test_tool_mode_switches_off_the_models_default_thinking() -> None:
    body = {"model": "claude", "messages": ASK, "response_format": JSON_OBJECT}
    sent = json.loads(
        AnthropicDialect().build_request(body, target("tool", reasoning_effort="high")).body
    )
    assert "thinking" not in sent  # forcing a tool is not allowed with thinking
    assert sent["tool_choice"]["type"] == "tool"
    # without json_object the default still applies
    plain = {"model": "claude", "messages": ASK}
    thinking = json.loads(
        AnthropicDialect().build_request(plain, target("tool", reasoning_effort="high")).body
    )
    assert thinking["thinking"]["type"] == "enabled"


def test_tool_mode_refuses_explicit_thinking_and_names_the_way_out() -> None:
    with pytest.raises(UntranslatableRequest) as info:
        upstream_body("tool", reasoning_effort="high")
    assert info.value.param == "reasoning_effort"
    assert "json_mode = instruction" in info.value.message
    assert info.value.status == 400
    sent = upstream_body("tool", reasoning_effort="none")
    assert sent["thinking"] == {"type": "disabled"}
    assert sent["tool_choice"]["name"] == JSON_TOOL


def test_tool_mode_refuses_client_tools() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    with pytest.raises(UntranslatableRequest) as info:
        upstream_body("tool", tools=tools)
    assert info.value.param == "tools"
    assert "json_mode = instruction" in info.value.message
    assert upstream_body("tool", tools=[])["tools"][0]["name"] == JSON_TOOL


def test_the_json_tool_name_is_reserved() -> None:
    tools = [{"type": "function", "function": {"name": JSON_TOOL}}]
    body = {"model": "claude", "messages": ASK, "tools": tools}
    with pytest.raises(ClientError) as info:
        AnthropicDialect().build_request(body, target("tool"))
    assert info.value.param == "tools[0].function.name"


# --- json_mode = instruction and off: the request ------------------------------------------------


def test_instruction_mode_appends_a_system_instruction_and_no_prefill() -> None:
    sent = upstream_body("instruction")
    assert sent["system"] == JSON_INSTRUCTION
    assert "JSON object" in JSON_INSTRUCTION
    assert sent["messages"][-1]["role"] == "user"  # no "{" prefill: refused by newer models
    assert "tools" not in sent
    assert "tool_choice" not in sent


def test_instruction_mode_comes_after_the_clients_system_text() -> None:
    messages = [{"role": "system", "content": "You are terse."}, *ASK]
    body = {"model": "claude", "messages": messages, "response_format": JSON_OBJECT}
    sent = json.loads(
        AnthropicDialect().build_request(body, target("instruction", system_prompt="Be kind.")).body
    )
    assert [b["text"] for b in sent["system"]] == ["Be kind.", "You are terse.", JSON_INSTRUCTION]


def test_instruction_mode_keeps_thinking_and_client_tools() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    sent = upstream_body("instruction", reasoning_effort="low", tools=tools)
    assert sent["thinking"]["type"] == "enabled"
    assert [t["name"] for t in sent["tools"]] == ["get_weather"]


def test_off_keeps_the_400() -> None:
    with pytest.raises(UntranslatableRequest) as info:
        upstream_body("off")
    assert info.value.param == "response_format"
    assert "json_mode = off" in info.value.message


# --- the answer, not streamed --------------------------------------------------------------------


def translate(body: dict[str, Any], meta: StreamMeta = META) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    result: dict[str, Any] = AnthropicDialect().translate_response(raw, meta)
    return result


def test_the_json_tools_input_becomes_the_content() -> None:
    completion = translate(tool_message(ANSWER))
    choice = completion["choices"][0]
    assert json.loads(choice["message"]["content"]) == ANSWER
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "stop"  # the call was the answer


def test_a_json_answer_in_text_passes_the_check() -> None:
    completion = translate(text_message(' {"capital": "Paris"}\n'), CHECKED)
    assert json.loads(completion["choices"][0]["message"]["content"]) == {"capital": "Paris"}


@pytest.mark.parametrize(
    ("text", "stop_reason", "why"),
    [
        ("Sure! The capital of France is Paris.", "end_turn", "not JSON"),
        ('```json\n{"capital": "Paris"}\n```', "end_turn", "not JSON"),
        ('["Paris"]', "end_turn", "JSON list, not an object"),
        ('{"capital": "Par', "max_tokens", "max_tokens"),
        ("I can't help with that.", "refusal", "refused"),
    ],
)
def test_an_answer_that_is_not_a_json_object_is_an_honest_502(
    text: str, stop_reason: str, why: str
) -> None:
    with pytest.raises(UpstreamProtocolError) as info:
        translate(text_message(text, stop_reason), CHECKED)
    assert info.value.status == 502
    assert info.value.code == "upstream_protocol_error"
    assert "did not return a JSON object" in info.value.message
    assert why in info.value.message


def test_text_around_the_json_tool_call_fails_the_check() -> None:
    body = tool_message(ANSWER)
    body["content"].insert(0, {"type": "text", "text": "Here you go:"})
    with pytest.raises(UpstreamProtocolError):
        translate(body)


def test_a_turn_calling_the_clients_tools_is_not_checked() -> None:
    call = {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Paris"}}
    body = message([{"type": "text", "text": "Let me look."}, call], "tool_use")
    completion = translate(body, CHECKED)
    assert completion["choices"][0]["finish_reason"] == "tool_calls"
    assert completion["choices"][0]["message"]["content"] == "Let me look."


def test_without_json_mode_prose_is_just_prose() -> None:
    completion = translate(text_message("Paris."))
    assert completion["choices"][0]["message"]["content"] == "Paris."


# --- the answer, streamed ------------------------------------------------------------------------


def test_the_json_tools_fragments_stream_as_content_byte_for_byte() -> None:
    fragments = ['{"capital"', ': "Paris", "country": "France"', ', "tags": ["city", "été"]}']
    chunks = replay(tool_stream(fragments))
    assert content_of(chunks) == "".join(fragments)
    assert json.loads(content_of(chunks)) == ANSWER
    assert not any(c["choices"][0]["delta"].get("tool_calls") for c in chunks)
    finishes = [
        c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]
    ]
    assert finishes == ["stop"]
    final = sdk_final(chunks)  # the openai SDK's own accumulator agrees
    assert json.loads(final.choices[0].message.content) == ANSWER
    assert final.choices[0].message.tool_calls is None


def test_json_text_streams_once_it_opens_an_object() -> None:
    chunks = replay(text_stream("  ", '{"capital":', ' "Paris"}'), CHECKED)
    deltas = [c["choices"][0]["delta"].get("content") for c in chunks]
    assert deltas == ["", '  {"capital":', ' "Paris"}', None]  # role, released, then as it comes
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_streamed_prose_is_held_back_and_ends_in_an_error() -> None:
    chunks = replay(text_stream("Sure! ", "The capital is Paris."), CHECKED)
    assert content_of(chunks) == ""  # not one character of prose reached the client
    assert chunks[-1]["status"] == 502
    assert chunks[-1]["error"]["code"] == "upstream_protocol_error"
    assert "did not return a JSON object" in chunks[-1]["error"]["message"]


def test_a_streamed_object_cut_at_max_tokens_ends_in_an_error() -> None:
    chunks = replay(text_stream('{"capital": "Pa', stop_reason="max_tokens"), CHECKED)
    assert content_of(chunks) == '{"capital": "Pa'
    assert "max_tokens" in chunks[-1]["error"]["message"]
    assert not any(c.get("choices") and c["choices"][0]["finish_reason"] for c in chunks)


def test_streamed_tool_fragments_that_are_not_an_object_end_in_an_error() -> None:
    chunks = replay(tool_stream(['"just', ' words"']))
    assert chunks[-1]["status"] == 502
    assert "JSON str, not an object" in chunks[-1]["error"]["message"]


def test_a_preamble_before_a_client_tool_call_is_released() -> None:
    chunks = replay(text_stream("Let me ", "check.", tool=True), CHECKED)
    assert content_of(chunks) == "Let me check."
    final = sdk_final(chunks)
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.choices[0].message.tool_calls[0].function.name == "get_weather"


# --- config --------------------------------------------------------------------------------------

BASE = """
[upstream:claude]
type = anthropic
api_key = sk-ant-x

[model:claude]
upstream = claude
"""


def test_json_mode_is_read_per_model() -> None:
    config = config_from(BASE + "json_mode = Instruction\n[model:other]\nupstream = claude\n")
    modes = {m.name: m.defaults.json_mode for m in config.models}
    assert modes == {"claude": "instruction", "other": "tool"}


def test_a_bad_json_mode_names_the_key_and_a_close_value() -> None:
    with pytest.raises(ConfigError) as info:
        config_from(BASE + "json_mode = instructions\n")
    message = str(info.value)
    assert "[model:claude] json_mode" in message
    assert "tool | instruction | off" in message
    assert "did you mean 'instruction'" in message


# --- end to end through the openai SDK -----------------------------------------------------------


def ini(url: str) -> str:
    return f"""
[proxy]
listen = 127.0.0.1:0
api_keys = sk-client-json

[upstream:claude]
type = anthropic
base_url = {url}
api_key = sk-ant-upstream-secret
max_retries = 0

[model:claude]
upstream = claude
upstream_model = claude-sonnet-4-5-20250929

[model:claude-instruction]
upstream = claude
upstream_model = claude-sonnet-4-5-20250929
json_mode = instruction
"""


@pytest.fixture
async def fake() -> AsyncIterator[tuple[str, FakeUpstream]]:
    upstream = FakeUpstream(json_reply(200, tool_message(ANSWER)))
    async with trio.open_nursery() as nursery:
        url = await nursery.start(upstream.serve)
        bound = await nursery.start(partial(serve, config_from(ini(url))))
        yield bound[0], upstream
        nursery.cancel_scope.cancel()


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="sk-client-json", max_retries=0)


async def test_sdk_json_object_on_claude_is_a_json_object(
    fake: tuple[str, FakeUpstream],
) -> None:
    url, upstream = fake

    def run() -> Any:
        with _client(url) as client:
            return client.chat.completions.create(
                model="claude", messages=ASK, response_format={"type": "json_object"}
            )

    completion = await trio.to_thread.run_sync(run)
    assert json.loads(completion.choices[0].message.content) == ANSWER
    assert completion.choices[0].finish_reason == "stop"
    sent = upstream.seen[0].json()
    assert sent["tool_choice"] == {
        "type": "tool",
        "name": JSON_TOOL,
        "disable_parallel_tool_use": True,
    }
    assert sent["tools"][0]["input_schema"] == {"type": "object"}


async def test_sdk_json_object_streamed_on_claude(fake: tuple[str, FakeUpstream]) -> None:
    url, upstream = fake
    fragments = ['{"capital"', ': "Paris", "country": "France"', ', "tags": ["city", "été"]}']
    upstream.script = [sse_reply(tool_stream(fragments), pieces=7)]

    def run() -> str:
        with _client(url) as client:
            stream = client.chat.completions.create(
                model="claude", messages=ASK, response_format={"type": "json_object"}, stream=True
            )
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert json.loads(await trio.to_thread.run_sync(run)) == ANSWER
    assert upstream.seen[0].json()["stream"] is True


async def test_sdk_streamed_tool_answer_that_is_not_an_object_raises(
    fake: tuple[str, FakeUpstream],
) -> None:
    url, upstream = fake
    upstream.script = [sse_reply(tool_stream(['"just', ' words"']))]

    def run() -> str:
        with _client(url) as client:
            stream = client.chat.completions.create(
                model="claude", messages=ASK, response_format={"type": "json_object"}, stream=True
            )
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    with pytest.raises(openai.APIError, match="did not return a JSON object"):
        await trio.to_thread.run_sync(run)


async def test_sdk_instruction_mode_sends_the_instruction(fake: tuple[str, FakeUpstream]) -> None:
    url, upstream = fake
    upstream.script = [json_reply(200, text_message('{"capital": "Paris"}'))]

    def run() -> Any:
        with _client(url) as client:
            return client.chat.completions.create(
                model="claude-instruction", messages=ASK, response_format={"type": "json_object"}
            )

    completion = await trio.to_thread.run_sync(run)
    assert json.loads(completion.choices[0].message.content) == {"capital": "Paris"}
    sent = upstream.seen[0].json()
    assert sent["system"] == JSON_INSTRUCTION
    assert "tools" not in sent


@pytest.mark.parametrize("stream", [False, True])
async def test_sdk_prose_answer_in_instruction_mode_is_an_error(
    fake: tuple[str, FakeUpstream], stream: bool
) -> None:
    url, upstream = fake
    prose = "Sure! The capital of France is Paris."
    upstream.script = [
        sse_reply(text_stream(prose)) if stream else json_reply(200, text_message(prose))
    ]

    def run() -> str:
        with _client(url) as client:
            if not stream:
                answer = client.chat.completions.create(
                    model="claude-instruction", messages=ASK, response_format=JSON_OBJECT
                )
                return answer.choices[0].message.content or ""
            chunks = client.chat.completions.create(
                model="claude-instruction", messages=ASK, response_format=JSON_OBJECT, stream=True
            )
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    with pytest.raises(openai.APIError, match="did not return a JSON object") as info:
        await trio.to_thread.run_sync(run)
    if not stream:
        assert isinstance(info.value, openai.InternalServerError)
        assert info.value.status_code == 502
        assert info.value.code == "upstream_protocol_error"
