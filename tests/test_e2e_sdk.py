"""End to end through the real server with the official openai SDK as the client, against fake
Anthropic, Responses and OpenAI-compatible chat upstreams on loopback replaying transcripts.
Checks the client's view and the upstream request the fake received."""

from __future__ import annotations

import json
from functools import partial
from typing import TYPE_CHECKING, Any

import openai
import pytest
import trio

from tests.conftest import config_from, on_server
from tests.fakes import FakeUpstream, sse_reply
from tests.support import DATA, PROTOCOL
from trioproxy.server import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def ini(anthropic: str, responses: str, chat: str) -> str:
    return f"""
[proxy]
listen = 127.0.0.1:0
api_keys = sk-client-e2e

[upstream:claude]
type = anthropic
base_url = {anthropic}
api_key = sk-ant-upstream-secret
max_retries = 0

[upstream:openai]
type = openai-responses
base_url = {responses}/v1
api_key = sk-openai-upstream-secret
max_retries = 0

[upstream:compat]
type = openai-chat
base_url = {chat}/v1
api_key = sk-compat-upstream-secret
max_retries = 0

[model:claude]
upstream = claude
upstream_model = claude-sonnet-4-5-20250929

[model:gpt-5]
upstream = openai

[model:deepseek-*]
upstream = compat
"""


class Upstreams:
    def __init__(
        self, url: str, claude: FakeUpstream, responses: FakeUpstream, chat: FakeUpstream
    ) -> None:
        self.url, self.claude, self.responses, self.chat = url, claude, responses, chat


@pytest.fixture
async def upstreams(server_kind: str) -> AsyncIterator[Upstreams]:
    claude = FakeUpstream(
        sse_reply((DATA / "anthropic" / "parallel_tools.sse").read_bytes(), pieces=9)
    )
    responses = FakeUpstream(
        sse_reply(
            (PROTOCOL / "openai_responses" / "stream_function_call.sse").read_bytes(), pieces=5
        )
    )
    chat = FakeUpstream(
        sse_reply((DATA / "chat" / "deepseek_reasoning_content.sse").read_bytes(), pieces=4)
    )
    async with trio.open_nursery() as nursery:
        urls = [await nursery.start(fake.serve) for fake in (claude, responses, chat)]
        bound = await nursery.start(partial(serve, config_from(on_server(ini(*urls), server_kind))))
        yield Upstreams(bound[0], claude, responses, chat)
        nursery.cancel_scope.cancel()


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="sk-client-e2e", max_retries=0)


async def test_anthropic_tool_calls_through_the_sdk_stream_helper(upstreams: Upstreams) -> None:
    def run() -> tuple[Any, list[Any]]:
        with _client(upstreams.url) as client:
            with client.chat.completions.stream(
                model="claude", messages=ASK, tools=TOOLS
            ) as stream:
                final = stream.get_final_completion()
            chunks = list(
                client.chat.completions.create(
                    model="claude", messages=ASK, tools=TOOLS, stream=True
                )
            )
            return final, chunks

    final, chunks = await trio.to_thread.run_sync(run)
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert len(message.tool_calls) == 2
    for call in message.tool_calls:
        assert call.id
        assert call.function.name
        json.loads(call.function.arguments)  # the fragments concatenated into valid JSON
    indexes = {
        tc.index for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])
    }
    assert indexes == {0, 1}
    sent = upstreams.claude.seen[0]
    assert sent.target == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-upstream-secret"
    assert "sk-client-e2e" not in json.dumps(sent.headers) + sent.body.decode()
    body = sent.json()
    assert body["model"] == "claude-sonnet-4-5-20250929"
    assert body["tools"][0]["name"] == "get_weather"
    assert body["tools"][0]["input_schema"]["properties"]["city"] == {"type": "string"}
    assert body["messages"] == [{"role": "user", "content": "What is the weather in Paris?"}]


async def test_responses_function_call_through_the_sdk(upstreams: Upstreams) -> None:
    def run() -> Any:
        with (
            _client(upstreams.url) as client,
            client.chat.completions.stream(model="gpt-5", messages=ASK, tools=TOOLS) as stream,
        ):
            return stream.get_final_completion()

    final = await trio.to_thread.run_sync(run)
    call = final.choices[0].message.tool_calls[0]
    assert call.id.startswith("call_")  # the call_id, not the fc_ item id (MAPPING.md H.17)
    json.loads(call.function.arguments)
    sent = upstreams.responses.seen[0]
    assert sent.target == "/v1/responses"
    assert sent.headers["authorization"] == "Bearer sk-openai-upstream-secret"
    body = sent.json()
    assert body["store"] is False
    assert body["tools"][0] == {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": False,
    }


async def test_openai_compatible_passthrough_keeps_reasoning_content(upstreams: Upstreams) -> None:
    def run() -> list[Any]:
        with _client(upstreams.url) as client:
            return list(
                client.chat.completions.create(model="deepseek-reasoner", messages=ASK, stream=True)
            )

    chunks = await trio.to_thread.run_sync(run)
    reasoning = "".join(
        getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices
    )
    assert reasoning
    assert sum(1 for c in chunks if c.choices and c.choices[0].finish_reason) == 1
    assert all(c.usage is None for c in chunks)  # not asked for: the injected usage is dropped
    body = upstreams.chat.seen[0].json()
    assert body["model"] == "deepseek-reasoner"  # wildcard routes forward the client's name
    assert body["stream_options"] == {"include_usage": True}


async def test_wrong_client_key_is_401_through_the_sdk(upstreams: Upstreams) -> None:
    def run() -> openai.AuthenticationError:
        with openai.OpenAI(
            base_url=upstreams.url + "/v1", api_key="sk-wrong", max_retries=0
        ) as client:
            try:
                client.chat.completions.create(model="claude", messages=ASK)
            except openai.AuthenticationError as exc:
                return exc
        raise AssertionError("expected a 401")

    exc = await trio.to_thread.run_sync(run)
    assert exc.status_code == 401
    assert not upstreams.claude.seen
