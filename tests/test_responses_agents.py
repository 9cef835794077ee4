"""The openai-agents SDK as a client of `/v1/responses` (its default model speaks Responses).

An Agent with a function tool runs against trioproxy (the demo upstream, and a fake
OpenAI-compatible chat upstream), plainly and streamed: the model's function call reaches the tool,
the tool's output goes back as a `function_call_output` item, and the final answer comes through.
The SDK is asyncio-based: each run is `asyncio.run` in a worker thread, with its own AsyncOpenAI
client pointed at trioproxy and tracing off (it would call api.openai.com otherwise).
"""

from __future__ import annotations

import asyncio
import json
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio

from tests.conftest import config_from, on_server
from tests.fakes import FakeUpstream, json_reply, sse_reply
from tests.support import DATA
from trioproxy.server import serve

agents = pytest.importorskip("agents", reason="openai-agents is in the test extra")

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

KEY = "sk-client-agents"


def ini(chat: str) -> str:
    return f"""
[proxy]
listen = 127.0.0.1:0
api_keys = {KEY}

[upstream:demo]
type = demo
demo_delay = 0

[upstream:compat]
type = openai-chat
base_url = {chat}/v1
api_key = sk-compat-upstream-secret
max_retries = 0

[model:demo]
upstream = demo

[model:compat]
upstream = compat
upstream_model = gpt-4.1-2025-04-14
"""


class Proxy:
    def __init__(self, url: str, chat: FakeUpstream) -> None:
        self.url, self.chat = url, chat


@pytest.fixture
async def proxy(server_kind: str) -> AsyncIterator[Proxy]:
    chat = FakeUpstream(json_reply(500, {}))
    async with trio.open_nursery() as nursery:
        chat_url = await nursery.start(chat.serve)
        bound = await nursery.start(
            partial(serve, config_from(on_server(ini(chat_url), server_kind)))
        )
        yield Proxy(bound[0], chat)
        nursery.cancel_scope.cancel()


def run_agent(url: str, model: str, prompt: str, *, streamed: bool, **settings: Any) -> Any:
    """Run one Agent with a `lookup` tool to the end; returns (final_output, tool inputs, event
    types). Runs in a worker thread (asyncio inside)."""
    from openai import AsyncOpenAI

    calls: list[str] = []

    @agents.function_tool
    def lookup(input: str) -> str:  # the demo's forced call sends {"input": <last user text>}
        """Look something up."""
        calls.append(input)
        return f"found: {input}"

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        calls.append(city)
        return f"sunny in {city}"

    async def main() -> tuple[Any, list[str], list[str]]:
        client = AsyncOpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        agents.set_tracing_disabled(True)
        agents.set_default_openai_client(client, use_for_tracing=False)
        agents.set_default_openai_api("responses")
        agent = agents.Agent(
            name="helper",
            instructions="Answer briefly.",
            model=model,
            tools=[lookup, get_weather],
            model_settings=agents.ModelSettings(**settings),
        )
        kinds: list[str] = []
        try:
            if streamed:
                result = agents.Runner.run_streamed(agent, prompt)
                async for event in result.stream_events():
                    kinds.append(event.type)
                return result.final_output, calls, kinds
            done = await agents.Runner.run(agent, prompt)
            return done.final_output, calls, kinds
        finally:
            await client.close()

    return asyncio.run(main())


@pytest.mark.parametrize("streamed", [False, True])
async def test_agent_with_a_function_tool_against_the_demo(proxy: Proxy, streamed: bool) -> None:
    # tool_choice "required" makes the demo call the first tool; the SDK then resets it
    # (reset_tool_choice) and the demo answers in text.
    output, calls, kinds = await trio.to_thread.run_sync(
        partial(run_agent, proxy.url, "demo", "Paris", streamed=streamed, tool_choice="required")
    )
    assert calls == ["Paris"]
    assert output.startswith("You said: Paris")
    if streamed:
        assert "raw_response_event" in kinds
        assert "run_item_stream_event" in kinds


async def test_streamed_agent_run_through_a_translated_chat_upstream(proxy: Proxy) -> None:
    final = {
        "id": "chatcmpl-2",
        "object": "chat.completion.chunk",
        "created": 1760000101,
        "model": "gpt-4.1-2025-04-14",
    }
    text = b"".join(
        b"data: " + json.dumps({**final, **chunk}).encode() + b"\n\n"
        for chunk in (
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Both sunny."}}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 3}},
        )
    )
    proxy.chat.script = [
        sse_reply((DATA / "chat" / "openai_tool_calls.sse").read_bytes(), pieces=4),
        sse_reply(text + b"data: [DONE]\n\n"),
    ]
    output, calls, _ = await trio.to_thread.run_sync(
        partial(run_agent, proxy.url, "compat", "Weather in two cities?", streamed=True)
    )
    assert output == "Both sunny."
    assert len(calls) == 2  # the two parallel calls of the transcript, each run once
    second = proxy.chat.seen[1].json()
    assert second["model"] == "gpt-4.1-2025-04-14"
    messages = second["messages"]
    assert messages[0] == {"role": "system", "content": "Answer briefly."}
    assert messages[1] == {"role": "user", "content": "Weather in two cities?"}
    (assistant,) = [m for m in messages if m["role"] == "assistant"]
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_aaa", "call_bbb"]
    tool_messages = [m for m in messages if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["call_aaa", "call_bbb"]
    assert all(m["content"].startswith("sunny in ") for m in tool_messages)
