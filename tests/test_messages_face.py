"""The Anthropic face (`POST /v1/messages`, `/v1/messages/count_tokens`) end to end, on both
servers, with the official anthropic SDK as the client (a sync client in a worker thread) and
fake upstreams on loopback: an Anthropic one (pass-through), an OpenAI-compatible chat one
(translation) and the built-in demo upstream. Checks what the client sees and what the upstream
received."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import anthropic
import pytest
import trio

from tests.conftest import config_from, on_server
from tests.fakes import FakeUpstream, Reply, json_reply, sse_reply
from tests.lifecycle_support import exchange, parse_responses, read_until
from tests.support import DATA, PROTOCOL
from trioproxy.server import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from anthropic.types import MessageParam, ToolParam

KEY = "sk-client-msg"
ASK: list[MessageParam] = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS: list[ToolParam] = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]
THINKING_SSE = (DATA / "anthropic" / "thinking_text.sse").read_bytes()
UNKNOWN_SSE = (DATA / "anthropic" / "unknown_events.sse").read_bytes()
SERVER_TOOLS_SSE = (DATA / "anthropic" / "server_tools.sse").read_bytes()
CHAT_TOOLS_SSE = (
    PROTOCOL / "openai_chat" / "from_anthropic" / "stream_tool_calls.sse"
).read_bytes()
CHAT_TEXT_SSE = (
    PROTOCOL / "openai_chat" / "from_anthropic" / "stream_text_include_usage.sse"
).read_bytes()


def ini(claude: str, chat: str, *, keepalive: float = 15) -> str:
    return f"""
[proxy]
listen = 127.0.0.1:0
api_keys = {KEY}
keepalive_interval = {keepalive}
max_body_bytes = 262144

[upstream:claude]
type = anthropic
base_url = {claude}
api_key = sk-ant-upstream-secret
max_retries = 0

[upstream:compat]
type = openai-chat
base_url = {chat}/v1
api_key = sk-compat-upstream-secret
max_retries = 0

[upstream:demo]
type = demo
demo_delay = 0

[model:claude]
upstream = claude
upstream_model = claude-sonnet-4-5-20250929

[model:gpt-compat]
upstream = compat

[model:claude-or-compat]
upstream = claude, compat
upstream_model = claude-sonnet-4-5-20250929

[model:demo]
upstream = demo
"""


class Proxy:
    def __init__(self, url: str, claude: FakeUpstream, chat: FakeUpstream) -> None:
        self.url, self.claude, self.chat = url, claude, chat
        self.port = int(url.rsplit(":", 1)[1])

    def client(self, **kw: Any) -> anthropic.Anthropic:
        kw.setdefault("api_key", KEY)
        return anthropic.Anthropic(base_url=self.url, max_retries=0, **kw)

    async def sdk(self, fn: Callable[[anthropic.Anthropic], Any], **kw: Any) -> Any:
        def run() -> Any:
            with self.client(**kw) as client:
                return fn(client)

        return await trio.to_thread.run_sync(run)


@asynccontextmanager
async def proxy(
    kind: str,
    claude: Reply | None = None,
    chat: Reply | None = None,
    *,
    keepalive: float = 15,
) -> AsyncIterator[Proxy]:
    fake_claude = FakeUpstream(claude or sse_reply(THINKING_SSE, pieces=7))
    fake_chat = FakeUpstream(chat or sse_reply(CHAT_TOOLS_SSE, pieces=5))
    async with trio.open_nursery() as nursery:
        urls = [await nursery.start(fake.serve) for fake in (fake_claude, fake_chat)]
        config = config_from(on_server(ini(*urls, keepalive=keepalive), kind))
        bound = await nursery.start(partial(serve, config))
        yield Proxy(bound[0], fake_claude, fake_chat)
        nursery.cancel_scope.cancel()


def raw_post(path: str, body: bytes, *headers: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: x", "Connection: close", f"Content-Length: {len(body)}"]
    return ("\r\n".join([*head, *headers]) + "\r\n\r\n").encode() + body


def message_body(model: str, **extra: Any) -> bytes:
    return json.dumps({"model": model, "max_tokens": 256, "messages": ASK, **extra}).encode()


def one_request_id(headers: Any) -> str:
    """The response's `request-id`: exactly one, equal to `x-request-id`."""
    ids = headers.get_list("request-id") if hasattr(headers, "get_list") else None
    if ids is None:  # a plain dict from parse_responses
        ids = [headers["request-id"]]
    assert len(ids) == 1
    assert ids[0] == headers["x-request-id"]
    assert ids[0].startswith("req_")
    return str(ids[0])


# --- pass-through to an Anthropic upstream ----------------------------------------------------


async def test_passthrough_stream_is_event_for_event_with_thinking_and_cache_usage(
    server_kind: str,
) -> None:
    async with proxy(server_kind) as p:
        response = await exchange(
            p.port,
            raw_post(
                "/v1/messages",
                message_body(
                    "claude", stream=True, thinking={"type": "enabled", "budget_tokens": 2048}
                ),
                f"x-api-key: {KEY}",
                "anthropic-version: 2023-06-01",
                "anthropic-beta: interleaved-thinking-2025-05-14",
                "content-type: application/json",
            ),
        )
        [answer] = parse_responses(response.data, eof=response.closed)
        assert answer.status == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        one_request_id(answer.headers)
        # The upstream's events, byte for byte (its framing is already `event:` + `data:`).
        assert answer.body == THINKING_SSE

        sent = p.claude.seen[0]
        assert sent.target == "/v1/messages"
        assert sent.headers["x-api-key"] == "sk-ant-upstream-secret"
        assert sent.headers["anthropic-version"] == "2023-06-01"
        assert sent.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
        assert KEY not in json.dumps(sent.headers) + sent.body.decode()
        client_body = json.loads(
            message_body("claude", stream=True, thinking={"type": "enabled", "budget_tokens": 2048})
        )
        assert sent.json() == {**client_body, "model": "claude-sonnet-4-5-20250929"}


async def test_passthrough_through_the_sdk_stream_helper_keeps_signature_and_cache_fields(
    server_kind: str,
) -> None:
    async with proxy(server_kind) as p:

        def run(client: anthropic.Anthropic) -> tuple[Any, list[Any]]:
            with client.messages.stream(
                model="claude",
                max_tokens=4096,
                messages=ASK,
                thinking={"type": "enabled", "budget_tokens": 2048},
            ) as stream:
                events = list(stream)
                final = stream.get_final_message()
            return final, events

        final, events = await p.sdk(run)
        thinking = final.content[0]
        assert thinking.type == "thinking"
        assert thinking.thinking == "Two blocks: first I plan. 17 \u00d7 3 = 51."
        assert thinking.signature.startswith("EpUBCkYIBxgCKkBx")
        assert final.content[1].type == "text"
        assert final.usage.cache_read_input_tokens == 0
        assert final.usage.cache_creation_input_tokens == 0
        assert final.usage.input_tokens == 52
        assert final.model == "claude-sonnet-4-5-20250929"
        assert any(e.type == "signature" for e in events)


async def test_passthrough_unknown_future_events_and_blocks_arrive_unchanged(
    server_kind: str,
) -> None:
    async with proxy(server_kind, claude=sse_reply(UNKNOWN_SSE, pieces=3)) as p:
        got = await exchange(
            p.port,
            raw_post("/v1/messages", message_body("claude", stream=True), f"x-api-key: {KEY}"),
        )
        [answer] = parse_responses(got.data, eof=got.closed)
        assert answer.body == UNKNOWN_SSE
        assert b"event: message_annotation\n" in answer.body

        def run(client: anthropic.Anthropic) -> list[str]:
            stream = client.messages.create(
                model="claude", max_tokens=64, messages=ASK, stream=True
            )
            return [str(getattr(event, "type", None)) for event in stream]

        types = await p.sdk(run)
        assert "telemetry" in types  # the SDK yields what it does not know; the proxy kept it
        assert types[0] == "message_start"
        assert types[-1] == "message_stop"


async def test_passthrough_server_tool_blocks_and_top_k_are_not_refused(server_kind: str) -> None:
    # Anthropic-only fields (server tools, top_k) go up untouched when every upstream of the
    # model is an Anthropic one; the same body to a translated model is a 400 naming them.
    async with proxy(server_kind, claude=sse_reply(SERVER_TOOLS_SSE)) as p:
        tools: list[Any] = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]

        def run(client: anthropic.Anthropic) -> tuple[Any, Any]:
            with client.messages.stream(
                model="claude",
                max_tokens=512,
                messages=ASK,
                tools=tools,
                extra_body={"top_k": 5},
            ) as stream:
                final = stream.get_final_message()
            try:
                client.messages.create(
                    model="gpt-compat",
                    max_tokens=64,
                    messages=ASK,
                    extra_body={"top_k": 5},
                )
            except anthropic.BadRequestError as exc:
                return final, exc
            raise AssertionError("expected a 400")

        final, exc = await p.sdk(run)
        assert [block.type for block in final.content] == [
            "text",
            "server_tool_use",
            "web_search_tool_result",
            "text",
        ]
        body = p.claude.seen[0].json()
        assert body["tools"] == tools
        assert body["top_k"] == 5
        assert exc.status_code == 400
        assert exc.body["error"]["type"] == "invalid_request_error"
        assert "top_k" in exc.body["error"]["message"]
        assert not p.chat.seen


async def test_passthrough_non_streaming_answer_is_the_upstream_body(server_kind: str) -> None:
    upstream_answer = json.loads((PROTOCOL / "anthropic" / "nonstream_tool_use.json").read_text())
    upstream_answer = upstream_answer.get("body", upstream_answer)
    upstream_answer["usage"]["cache_read_input_tokens"] = 1234
    upstream_answer["future_field"] = {"kept": True}
    async with proxy(
        server_kind, claude=json_reply(200, upstream_answer, [("request-id", "req_upstream1")])
    ) as p:

        def run(client: anthropic.Anthropic) -> Any:
            raw = client.messages.with_raw_response.create(
                model="claude",
                max_tokens=256,
                messages=ASK,
                tools=TOOLS,
                extra_headers={"anthropic-beta": "token-efficient-tools-2025-02-19"},
            )
            return raw.headers, raw.http_response.json(), raw.parse()

        headers, body, message = await p.sdk(run)
        assert body == upstream_answer
        assert message.usage.cache_read_input_tokens == 1234
        assert one_request_id(headers) != "req_upstream1"
        assert headers["x-upstream-request-id"] == "req_upstream1"
        sent = p.claude.seen[0]
        assert sent.headers["anthropic-beta"] == "token-efficient-tools-2025-02-19"
        # the SDK's own version, forwarded over the upstream's configured one
        assert sent.headers["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION
        assert sent.json()["tools"] == TOOLS
        assert sent.json()["model"] == "claude-sonnet-4-5-20250929"


CLAUDE_CODE_BODY: dict[str, Any] = {
    # The shape of a Claude Code turn: a cached system prompt in blocks, many tools (the last
    # one cached), earlier thinking with its signature, tool_use / tool_result turns, metadata,
    # context management (a beta field no translation knows), streaming.
    "model": "claude",
    "max_tokens": 32000,
    "stream": True,
    "system": [
        {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
        {
            "type": "text",
            "text": "Use the tools to answer. " * 40,
            "cache_control": {"type": "ephemeral"},
        },
    ],
    "tools": [
        {
            "name": f"Tool{i}",
            "description": f"Tool number {i}",
            "input_schema": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
                "additionalProperties": False,
                "$schema": "http://json-schema.org/draft-07/schema#",
            },
            **({"cache_control": {"type": "ephemeral"}} if i == 17 else {}),
        }
        for i in range(18)
    ],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Read setup.py and tell me"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should read it.", "signature": "EqQBCkgI"},
                {"type": "tool_use", "id": "toolu_01X", "name": "Tool3", "input": {"path": "a"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01X",
                    "content": [{"type": "text", "text": "from setuptools import setup"}],
                    "cache_control": {"type": "ephemeral"},
                }
            ],
        },
    ],
    "metadata": {"user_id": "user_abc_account_def_session_123"},
    "thinking": {"type": "enabled", "budget_tokens": 31999},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "temperature": 1,
}


async def test_claude_code_turn_passes_through_unchanged(server_kind: str) -> None:
    async with proxy(server_kind) as p:
        beta = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27"
        got = await exchange(
            p.port,
            raw_post(
                "/v1/messages?beta=true",  # Claude Code's query string
                json.dumps(CLAUDE_CODE_BODY).encode(),
                f"authorization: Bearer {KEY}",
                "anthropic-version: 2023-06-01",
                f"anthropic-beta: {beta}",
                "x-app: cli",
                "user-agent: claude-cli/2.0.0 (external, cli)",
            ),
        )
        [answer] = parse_responses(got.data, eof=got.closed)
        assert answer.status == 200
        assert answer.body == THINKING_SSE
        sent = p.claude.seen[0]
        assert sent.json() == {**CLAUDE_CODE_BODY, "model": "claude-sonnet-4-5-20250929"}
        assert sent.headers["anthropic-beta"] == beta
        assert sent.headers["anthropic-version"] == "2023-06-01"
        assert "x-app" not in sent.headers  # only version and beta headers are carried up
        assert KEY not in json.dumps(sent.headers)


async def test_failover_from_anthropic_to_a_translated_upstream(server_kind: str) -> None:
    over = json.loads((PROTOCOL / "anthropic" / "errors" / "529.json").read_text())
    async with proxy(
        server_kind, claude=json_reply(529, over["body"]), chat=sse_reply(CHAT_TEXT_SSE)
    ) as p:

        def run(client: anthropic.Anthropic) -> Any:
            with client.messages.stream(
                model="claude-or-compat", max_tokens=64, messages=ASK
            ) as stream:
                return stream.get_final_message()

        final = await p.sdk(run)
        assert final.content[0].text.startswith("At high altitude")
        assert final.usage.output_tokens == 33
        assert len(p.claude.seen) == 1
        assert p.chat.seen[0].json()["model"] == "claude-sonnet-4-5-20250929"


# --- translation to an OpenAI-compatible chat upstream ----------------------------------------


async def test_translated_stream_tool_use_and_usage_through_the_sdk(server_kind: str) -> None:
    async with proxy(server_kind) as p:

        def run(client: anthropic.Anthropic) -> Any:
            with client.messages.stream(
                model="gpt-compat", max_tokens=256, messages=ASK, tools=TOOLS
            ) as stream:
                return stream.get_final_message()

        final = await p.sdk(run)
        assert [block.type for block in final.content] == ["text", "tool_use", "tool_use"]
        assert final.content[0].text == "I'll check both cities."
        assert final.content[1].input == {"city": "Reykjavik", "unit": "celsius"}
        assert final.content[2].input == {"city": "Oslo", "unit": "celsius"}
        assert final.content[1].id == "toolu_01A9xQ3cZr7Yb2Lm5Nw8Kp6T"
        assert final.stop_reason == "tool_use"
        assert final.usage.input_tokens == 12
        assert final.usage.cache_read_input_tokens == 400
        assert final.usage.output_tokens == 96
        assert final.id.startswith("msg_")
        sent = p.chat.seen[0]
        assert sent.target == "/v1/chat/completions"
        assert sent.headers["authorization"] == "Bearer sk-compat-upstream-secret"
        body = sent.json()
        assert body["model"] == "gpt-compat"
        assert body["stream_options"] == {"include_usage": True}
        assert body["tools"][0]["function"]["name"] == "get_weather"
        assert not p.claude.seen


async def test_translated_non_streaming_text(server_kind: str) -> None:
    completion = json.loads(
        (PROTOCOL / "openai_chat" / "from_anthropic" / "nonstream_text.json").read_text()
    )
    async with proxy(server_kind, chat=json_reply(200, completion)) as p:

        def run(client: anthropic.Anthropic) -> Any:
            raw = client.messages.with_raw_response.create(
                model="gpt-compat", max_tokens=64, messages=ASK, stop_sequences=["END"]
            )
            return raw.headers, raw.parse()

        headers, message = await p.sdk(run)
        one_request_id(headers)
        assert message.type == "message"
        assert message.content[0].type == "text"
        assert message.content[0].text == completion["choices"][0]["message"]["content"]
        assert message.stop_reason == "end_turn"
        assert message.usage.output_tokens == completion["usage"]["completion_tokens"]
        assert p.chat.seen[0].json()["stop"] == ["END"]


async def test_translated_raw_stream_shows_event_lines_like_curl(server_kind: str) -> None:
    async with proxy(server_kind, chat=sse_reply(CHAT_TEXT_SSE, pieces=3)) as p:
        got = await exchange(
            p.port,
            raw_post(
                "/v1/messages",
                message_body("gpt-compat", stream=True),
                f"authorization: Bearer {KEY}",
            ),
        )
        [answer] = parse_responses(got.data, eof=got.closed)
        assert answer.status == 200
        blocks = answer.body.decode().split("\n\n")
        assert blocks[-1] == ""
        names = [block.split("\n")[0] for block in blocks[:-1]]
        assert names[0] == "event: message_start"
        assert names[-2:] == ["event: message_delta", "event: message_stop"]
        assert all(name.startswith("event: ") for name in names)
        for block in blocks[:-1]:
            name, data = block.split("\n")
            assert json.loads(data.removeprefix("data: "))["type"] == name.removeprefix("event: ")


# --- the demo upstream ------------------------------------------------------------------------


async def test_demo_upstream_create_and_text_stream(server_kind: str) -> None:
    async with proxy(server_kind) as p:

        def run(client: anthropic.Anthropic) -> tuple[Any, str, Any]:
            message = client.messages.create(model="demo", max_tokens=64, messages=ASK)
            with client.messages.stream(model="demo", max_tokens=64, messages=ASK) as stream:
                text = "".join(stream.text_stream)
                final = stream.get_final_message()
            return message, text, final

        message, text, final = await p.sdk(run)
        assert message.content[0].type == "text"
        assert message.content[0].text
        assert text == final.content[0].text
        assert text
        assert final.stop_reason == "end_turn"
        assert final.usage.output_tokens > 0


# --- errors -----------------------------------------------------------------------------------


async def test_unknown_model_and_bad_key_are_the_sdks_own_exceptions(server_kind: str) -> None:
    async with proxy(server_kind) as p:

        def unknown(client: anthropic.Anthropic) -> anthropic.NotFoundError:
            try:
                client.messages.create(model="nope", max_tokens=5, messages=ASK)
            except anthropic.NotFoundError as exc:
                return exc
            raise AssertionError("expected a 404")

        def bad_key(client: anthropic.Anthropic) -> anthropic.AuthenticationError:
            try:
                client.messages.create(model="claude", max_tokens=5, messages=ASK)
            except anthropic.AuthenticationError as exc:
                return exc
            raise AssertionError("expected a 401")

        exc = await p.sdk(unknown)
        assert exc.status_code == 404
        assert exc.body["type"] == "error"
        assert exc.body["error"]["type"] == "not_found_error"
        assert "nope" in exc.body["error"]["message"]
        assert exc.request_id == exc.response.headers["x-request-id"]
        one_request_id(exc.response.headers)
        auth = await p.sdk(bad_key, api_key="sk-wrong")
        assert auth.status_code == 401
        assert auth.body["error"]["type"] == "authentication_error"
        # Claude Code's ANTHROPIC_AUTH_TOKEN is sent as a bearer token
        message = await p.sdk(
            lambda c: c.messages.create(model="demo", max_tokens=5, messages=ASK),
            api_key=None,
            auth_token=KEY,
        )
        assert message.content[0].text
        assert not p.claude.seen


async def test_upstream_429_keeps_retry_after_and_529_is_not_a_200(server_kind: str) -> None:
    rate = json.loads((PROTOCOL / "anthropic" / "errors" / "429.json").read_text())
    over = json.loads((PROTOCOL / "anthropic" / "errors" / "529.json").read_text())
    script = [
        json_reply(529, over["body"], [("request-id", "req_up529")]),
        json_reply(529, over["body"]),
        json_reply(429, rate["body"], [("retry-after", "30"), ("request-id", "req_up429")]),
    ]
    async with proxy(server_kind) as p:
        p.claude.script = script

        def run(client: anthropic.Anthropic) -> list[anthropic.APIStatusError]:
            out: list[anthropic.APIStatusError] = []
            try:
                client.messages.create(model="claude", max_tokens=5, messages=ASK)
            except anthropic.OverloadedError as exc:
                out.append(exc)
            try:
                with client.messages.stream(model="claude", max_tokens=5, messages=ASK) as s:
                    s.get_final_message()
            except anthropic.OverloadedError as exc:
                out.append(exc)
            try:
                client.messages.create(model="claude", max_tokens=5, messages=ASK)
            except anthropic.RateLimitError as exc:
                out.append(exc)
            return out

        overloaded, overloaded_stream, limited = await p.sdk(run)
        assert limited.status_code == 429
        assert limited.response.headers["retry-after"] == "30"
        assert limited.body["error"]["type"] == "rate_limit_error"
        assert one_request_id(limited.response.headers) != "req_up429"
        for exc in (overloaded, overloaded_stream):
            assert exc.status_code == 529  # a real status before the first byte, not a 200
            assert exc.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}
            one_request_id(exc.response.headers)


async def test_mid_stream_upstream_error_event_is_relayed_and_raises_in_the_sdk(
    server_kind: str,
) -> None:
    raw = (DATA / "anthropic" / "mid_stream_error.sse").read_bytes()
    async with proxy(server_kind, claude=sse_reply(raw, pieces=2)) as p:

        def run(client: anthropic.Anthropic) -> anthropic.APIStatusError:
            try:
                with client.messages.stream(model="claude", max_tokens=5, messages=ASK) as s:
                    s.get_final_message()
            except anthropic.APIStatusError as exc:
                return exc
            raise AssertionError("expected the error event to raise")

        exc = await p.sdk(run)
        assert exc.body["type"] == "error"
        got = await exchange(
            p.port,
            raw_post("/v1/messages", message_body("claude", stream=True), f"x-api-key: {KEY}"),
        )
        [answer] = parse_responses(got.data, eof=got.closed)
        assert answer.body == raw


async def test_translated_stream_cut_short_ends_with_an_error_event(server_kind: str) -> None:
    cut = CHAT_TEXT_SSE[: CHAT_TEXT_SSE.index(b'"finish_reason":"stop"')]
    cut = cut[: cut.rindex(b"\n\n") + 2]
    async with proxy(server_kind, chat=sse_reply(cut)) as p:
        got = await exchange(
            p.port,
            raw_post("/v1/messages", message_body("gpt-compat", stream=True), f"x-api-key: {KEY}"),
        )
        [answer] = parse_responses(got.data, eof=got.closed)
        assert answer.status == 200
        last = answer.body.decode().split("\n\n")[-2]
        name, data = last.split("\n")
        assert name == "event: error"
        error = json.loads(data.removeprefix("data: "))
        assert error["type"] == "error"
        assert error["error"]["type"] == "api_error"
        assert b"message_stop" not in answer.body


async def test_bad_json_and_too_large_body_in_anthropics_envelope(server_kind: str) -> None:
    async with proxy(server_kind) as p:
        got = await exchange(p.port, raw_post("/v1/messages", b"{nope", f"x-api-key: {KEY}"))
        [bad] = parse_responses(got.data, eof=got.closed)
        assert bad.status == 400
        envelope = json.loads(bad.body)
        assert envelope["type"] == "error"
        assert envelope["error"]["type"] == "invalid_request_error"
        assert envelope["request_id"] == one_request_id(bad.headers)

        huge = b'{"model": "claude", "pad": "' + b"x" * 300_000 + b'"}'
        got = await exchange(p.port, raw_post("/v1/messages", huge, f"x-api-key: {KEY}"))
        [large] = parse_responses(got.data, eof=got.closed)
        assert large.status == 413
        assert json.loads(large.body)["error"]["type"] == "request_too_large"
        one_request_id(large.headers)

        got = await exchange(p.port, raw_post("/v1/messages", message_body("claude")))
        [anonymous] = parse_responses(got.data, eof=got.closed)
        assert anonymous.status == 401
        assert json.loads(anonymous.body)["error"]["type"] == "authentication_error"
        assert not p.claude.seen


# --- cancellation and keep-alive --------------------------------------------------------------


async def test_client_disconnect_mid_stream_closes_the_upstream(server_kind: str) -> None:
    first = THINKING_SSE[: THINKING_SSE.index(b"event: content_block_delta")]
    held = Reply(body=[first, None])  # then silence, forever
    async with proxy(server_kind, claude=held) as p:
        stream = await trio.open_tcp_stream("127.0.0.1", p.port)
        await stream.send_all(
            raw_post("/v1/messages", message_body("claude", stream=True), f"x-api-key: {KEY}")
        )
        got = await read_until(stream, b"event: content_block_start", 5)
        assert b"event: message_start" in got.data
        await p.claude.wait_requests(1)
        left = trio.current_time()
        await stream.aclose()
        with trio.fail_after(2):
            await p.claude.seen[0].closed.wait()
        closed_at = p.claude.seen[0].closed_at
        assert closed_at is not None
        assert closed_at - left < 0.1  # DESIGN.md "Cancellation": EOF within 100 ms


async def test_upstream_silence_gets_anthropic_ping_events(server_kind: str) -> None:
    first = CHAT_TEXT_SSE[: CHAT_TEXT_SSE.index(b"\n\n") + 2]
    rest = CHAT_TEXT_SSE[len(first) :]
    slow = Reply(body=[first, 1.0, rest])  # five keep-alive intervals: room on a busy machine
    async with proxy(server_kind, chat=slow, keepalive=0.2) as p:
        got = await exchange(
            p.port,
            raw_post("/v1/messages", message_body("gpt-compat", stream=True), f"x-api-key: {KEY}"),
        )
        [answer] = parse_responses(got.data, eof=got.closed)
        events = answer.body.split(b"\n\n")
        ping = b'event: ping\ndata: {"type":"ping"}'
        # The silence comes before the first chunk: the message starts, then pings.
        assert events[0].startswith(b"event: message_start\n")
        assert events[1] == ping
        assert events.count(ping) >= 1
        assert sum(1 for e in events if e.startswith(b"event: message_start")) == 1
        assert answer.body.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


# --- models and count_tokens -------------------------------------------------------------------


async def test_models_list_and_retrieve_through_the_anthropic_sdk(server_kind: str) -> None:
    async with proxy(server_kind) as p:

        def run(client: anthropic.Anthropic) -> tuple[list[str], Any]:
            ids = [model.id for model in client.models.list()]
            return ids, client.models.retrieve("claude")

        ids, model = await p.sdk(run)
        assert set(ids) >= {"claude", "gpt-compat", "demo"}
        assert model.id == "claude"
        assert model.type == "model"


async def test_count_tokens_is_relayed_to_an_anthropic_upstream(server_kind: str) -> None:
    async with proxy(server_kind, claude=json_reply(200, {"input_tokens": 4321})) as p:

        def run(client: anthropic.Anthropic) -> tuple[Any, Any]:
            raw = client.messages.with_raw_response.count_tokens(
                model="claude",
                messages=ASK,
                tools=TOOLS,
                extra_headers={"anthropic-beta": "token-counting-2024-11-01"},
            )
            return raw.headers, raw.parse()

        headers, count = await p.sdk(run)
        assert count.input_tokens == 4321
        assert headers["x-trioproxy-token-count"] == "upstream"
        one_request_id(headers)
        sent = p.claude.seen[0]
        assert sent.target == "/v1/messages/count_tokens"
        assert sent.headers["anthropic-beta"] == "token-counting-2024-11-01"
        assert sent.headers["x-api-key"] == "sk-ant-upstream-secret"
        assert sent.json() == {
            "model": "claude-sonnet-4-5-20250929",
            "messages": ASK,
            "tools": TOOLS,
        }


async def test_count_tokens_elsewhere_is_an_estimate_said_in_a_header(server_kind: str) -> None:
    async with proxy(server_kind) as p:

        def run(client: anthropic.Anthropic) -> tuple[Any, Any]:
            raw = client.messages.with_raw_response.count_tokens(
                model="gpt-compat", messages=ASK, system="Be brief."
            )
            return raw.headers, raw.parse()

        headers, count = await p.sdk(run)
        assert headers["x-trioproxy-token-count"] == "estimate"
        # 3 per message + ceil(("Be brief." + the question) / 4): see from_anthropic_count.py
        assert count.input_tokens == 3 + -(-(9 + len("What is the weather in Paris?")) // 4)
        assert not p.chat.seen
        assert not p.claude.seen


async def test_count_tokens_upstream_error_in_anthropics_envelope(server_kind: str) -> None:
    over = json.loads((PROTOCOL / "anthropic" / "errors" / "529.json").read_text())
    async with proxy(server_kind, claude=json_reply(529, over["body"])) as p:

        def run(client: anthropic.Anthropic) -> anthropic.OverloadedError:
            try:
                client.messages.count_tokens(model="claude", messages=ASK)
            except anthropic.OverloadedError as exc:
                return exc
            raise AssertionError("expected a 529")

        exc = await p.sdk(run)
        assert exc.status_code == 529
        one_request_id(exc.response.headers)


@pytest.mark.parametrize("model", ["nope", ""])
async def test_count_tokens_rejects_unknown_or_missing_model(model: str) -> None:
    async with proxy("native") as p:
        got = await exchange(
            p.port,
            raw_post(
                "/v1/messages/count_tokens",
                json.dumps({"model": model, "messages": ASK}).encode(),
                f"x-api-key: {KEY}",
            ),
        )
        [answer] = parse_responses(got.data, eof=got.closed)
        assert answer.status == (404 if model else 400)
        assert json.loads(answer.body)["type"] == "error"


async def test_relay_only_request_still_keeps_the_proxys_size_limits(server_kind: str) -> None:
    async with proxy(server_kind) as p:
        many = [{"role": "user", "content": "hi"}] * 2049  # max_messages defaults to 2048
        body = json.dumps({"model": "claude", "max_tokens": 5, "messages": many}).encode()
        got = await exchange(p.port, raw_post("/v1/messages", body, f"x-api-key: {KEY}"))
        [answer] = parse_responses(got.data, eof=got.closed)
        assert answer.status == 400
        error = json.loads(answer.body)["error"]
        assert error["type"] == "invalid_request_error"
        assert "max_messages" in error["message"]
        body = json.dumps({"model": "claude", "max_tokens": 5, "messages": "hi"}).encode()
        got = await exchange(p.port, raw_post("/v1/messages", body, f"x-api-key: {KEY}"))
        [answer] = parse_responses(got.data, eof=got.closed)
        assert answer.status == 400
        assert "messages" in json.loads(answer.body)["error"]["message"]
        assert not p.claude.seen
