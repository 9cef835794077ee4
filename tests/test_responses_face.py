"""`POST /v1/responses` end to end, on both servers, with the official openai SDK as the client.

Against fake upstreams on loopback: a Responses upstream (pass-through: the events and the body
cross unchanged but for the model), an Anthropic upstream and an OpenAI-compatible chat upstream
(translated), and the built-in demo. Checks the client's view and what the upstream received.
"""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import openai
import pytest
import trio

from tests.conftest import DEMO_INI, config_from, on_server
from tests.fakes import FakeUpstream, Reply, json_reply, sse_reply
from tests.support import DATA, PROTOCOL
from trioproxy.server import serve
from trioproxy.sse import SSEDecoder

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

KEY = "sk-client-responses"
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
RESPONSES_SSE = PROTOCOL / "openai_responses" / "stream_function_call.sse"


def ini(anthropic: str, responses: str, chat: str) -> str:
    return f"""
[proxy]
listen = 127.0.0.1:0
api_keys = {KEY}
keepalive_interval = 15

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

[upstream:demo]
type = demo
demo_delay = 0

[model:claude]
upstream = claude
upstream_model = claude-sonnet-4-5-20250929

[model:gpt-5]
upstream = openai
upstream_model = gpt-5-mini-2025-08-07

[model:compat]
upstream = compat
upstream_model = deepseek-reasoner

[model:demo]
upstream = demo
"""


class Proxy:
    def __init__(
        self, url: str, claude: FakeUpstream, responses: FakeUpstream, chat: FakeUpstream
    ) -> None:
        self.url, self.claude, self.responses, self.chat = url, claude, responses, chat

    def client(self, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=KEY, max_retries=0, **kw)

    async def run(self, fn: Callable[[openai.OpenAI], Any]) -> Any:
        def work() -> Any:
            with self.client() as client:
                return fn(client)

        return await trio.to_thread.run_sync(work)


@pytest.fixture
async def proxy(server_kind: str) -> AsyncIterator[Proxy]:
    claude, responses, chat = FakeUpstream(Reply()), FakeUpstream(Reply()), FakeUpstream(Reply())
    async with trio.open_nursery() as nursery:
        urls = [await nursery.start(fake.serve) for fake in (claude, responses, chat)]
        bound = await nursery.start(partial(serve, config_from(on_server(ini(*urls), server_kind))))
        yield Proxy(bound[0], claude, responses, chat)
        nursery.cancel_scope.cancel()


def events_of(raw: bytes) -> list[tuple[str, str]]:
    decoder = SSEDecoder()
    return [(e.event, e.data) for e in [*decoder.feed(raw), *decoder.finish()]]


def output_of(response: Any, kind: str) -> list[Any]:
    return [item for item in response.output if item.type == kind]


# --- pass-through: a Responses upstream ------------------------------------------------------


async def test_passthrough_stream_relays_the_upstreams_events_unchanged(proxy: Proxy) -> None:
    raw = RESPONSES_SSE.read_bytes()
    proxy.responses.script = [sse_reply(raw, pieces=7)]

    def run(client: openai.OpenAI) -> tuple[bytes, str]:
        with client.responses.with_streaming_response.create(
            model="gpt-5", input="Weather in Paris?", tools=TOOLS, stream=True
        ) as resp:
            return resp.read(), resp.headers["content-type"]

    received, content_type = await proxy.run(run)
    assert content_type.startswith("text/event-stream")
    assert events_of(received) == events_of(raw)  # every event, name and data, unchanged
    sent = proxy.responses.seen[0]
    assert sent.target == "/v1/responses"
    assert sent.headers["authorization"] == "Bearer sk-openai-upstream-secret"
    assert KEY not in json.dumps(sent.headers)
    # The client's body, only the model changed (translate/relay.py).
    assert sent.json() == {
        "model": "gpt-5-mini-2025-08-07",
        "input": "Weather in Paris?",
        "tools": TOOLS,
        "stream": True,
    }


async def test_passthrough_stream_through_the_sdk_helpers(proxy: Proxy) -> None:
    proxy.responses.script = [sse_reply(RESPONSES_SSE.read_bytes(), pieces=5)]

    def run(client: openai.OpenAI) -> tuple[Any, list[Any]]:
        with client.responses.stream(model="gpt-5", input="Weather?", tools=TOOLS) as stream:
            final = stream.get_final_response()
        events = list(client.responses.create(model="gpt-5", input="Weather?", stream=True))
        return final, events

    final, events = await proxy.run(run)
    calls = output_of(final, "function_call")
    assert calls
    for call in calls:
        assert call.name == "get_weather"
        assert call.call_id.startswith("call_")
        json.loads(call.arguments)
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))


async def test_passthrough_non_streaming_is_the_upstreams_body(proxy: Proxy) -> None:
    upstream_body = json.loads((PROTOCOL / "openai_responses" / "nonstream_text.json").read_text())
    proxy.responses.script = [json_reply(200, upstream_body)]

    def run(client: openai.OpenAI) -> tuple[Any, Any]:
        raw = client.responses.with_raw_response.create(model="gpt-5", input="Hi", store=False)
        return raw.http_response.json(), raw.parse()

    body, parsed = await proxy.run(run)
    assert body == upstream_body
    assert parsed.output_text
    assert proxy.responses.seen[0].json() == {
        "model": "gpt-5-mini-2025-08-07",
        "input": "Hi",
        "store": False,
    }


# --- translated: Anthropic, OpenAI-compatible chat, demo -------------------------------------


async def test_anthropic_stream_translated_text_reasoning_and_usage(proxy: Proxy) -> None:
    proxy.claude.script = [
        sse_reply((DATA / "anthropic" / "thinking_text.sse").read_bytes(), pieces=9)
    ]

    def run(client: openai.OpenAI) -> tuple[Any, list[Any]]:
        with client.responses.stream(
            model="claude",
            input="Why is the sky blue?",
            instructions="Be brief.",
            reasoning={"effort": "low", "summary": "auto"},
            max_output_tokens=2048,
        ) as stream:
            events = list(stream)
            return stream.get_final_response(), events

    final, events = await proxy.run(run)
    assert final.status == "completed"
    assert final.id.startswith("resp_")
    reasoning = output_of(final, "reasoning")  # two thinking blocks with text between them
    assert [item.summary[0].text != "" for item in reasoning] == [True, True]
    assert final.output_text
    assert final.usage.input_tokens > 0
    assert final.usage.output_tokens > 0
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == final.output_text
    assert any(e.type == "response.reasoning_summary_text.delta" for e in events)
    sent = proxy.claude.seen[0]
    assert sent.target == "/v1/messages"
    body = sent.json()
    assert body["model"] == "claude-sonnet-4-5-20250929"
    assert body["system"] == "Be brief." or body["system"][0]["text"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": "Why is the sky blue?"}]
    assert body["max_tokens"] == 2048
    assert body["stream"] is True


async def test_anthropic_function_calls_translated_streaming_and_not(proxy: Proxy) -> None:
    proxy.claude.script = [
        sse_reply((DATA / "anthropic" / "parallel_tools.sse").read_bytes(), pieces=6),
        json_reply(
            200, json.loads((PROTOCOL / "anthropic" / "nonstream_tool_use.json").read_text())
        ),
    ]

    def run(client: openai.OpenAI) -> tuple[Any, list[Any], Any]:
        with client.responses.stream(model="claude", input="Weather?", tools=TOOLS) as stream:
            events = list(stream)
            final = stream.get_final_response()
        whole = client.responses.create(model="claude", input="Weather?", tools=TOOLS)
        return final, events, whole

    final, events, whole = await proxy.run(run)
    for response in (final, whole):
        calls = output_of(response, "function_call")
        assert len(calls) == 2
        for call in calls:
            assert call.call_id.startswith("toolu_")
            assert call.name
            json.loads(call.arguments)
    fragments = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    done = [e.arguments for e in events if e.type == "response.function_call_arguments.done"]
    assert "".join(fragments) == "".join(done)
    assert whole.usage.input_tokens_details.cached_tokens == 400
    tool = proxy.claude.seen[0].json()["tools"][0]
    assert tool["name"] == "get_weather"
    assert tool["input_schema"]["properties"] == {"city": {"type": "string"}}


async def test_chat_upstream_stream_translated_reasoning_and_text(proxy: Proxy) -> None:
    raw = (DATA / "chat" / "deepseek_reasoning_content.sse").read_bytes()
    proxy.chat.script = [sse_reply(raw, pieces=4)]

    def run(client: openai.OpenAI) -> Any:
        with client.responses.stream(model="compat", input="Temperature?") as stream:
            return stream.get_final_response()

    final = await proxy.run(run)
    (reasoning,) = output_of(final, "reasoning")
    assert "Let me think" in reasoning.summary[0].text
    assert final.output_text
    assert final.model == "deepseek-reasoner"
    body = proxy.chat.seen[0].json()
    assert proxy.chat.seen[0].target == "/v1/chat/completions"
    assert body["model"] == "deepseek-reasoner"
    assert body["messages"] == [{"role": "user", "content": "Temperature?"}]
    assert body["stream_options"] == {"include_usage": True}


def _chat_completion(message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1760000000,
        "model": "deepseek-chat",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27},
    }


CALL = {
    "id": "call_w1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


async def test_function_call_round_trip_through_a_chat_upstream(proxy: Proxy) -> None:
    proxy.chat.script = [
        json_reply(
            200, _chat_completion({"role": "assistant", "tool_calls": [CALL]}, "tool_calls")
        ),
        json_reply(200, _chat_completion({"role": "assistant", "content": "Sunny, 21 C."}, "stop")),
    ]

    def run(client: openai.OpenAI) -> tuple[Any, Any]:
        ask: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
        first = client.responses.create(model="compat", input=ask, tools=TOOLS, store=False)
        (call,) = output_of(first, "function_call")
        second = client.responses.create(
            model="compat",
            input=[
                *ask,
                *[cast("Any", item.model_dump(exclude_none=True)) for item in first.output],
                {"type": "function_call_output", "call_id": call.call_id, "output": "21 C, sun"},
            ],
            tools=TOOLS,
            store=False,
        )
        return first, second

    first, second = await proxy.run(run)
    (call,) = output_of(first, "function_call")
    assert (call.call_id, call.name, call.arguments) == (
        "call_w1",
        "get_weather",
        '{"city": "Paris"}',
    )
    assert first.usage.input_tokens == 20
    assert second.output_text == "Sunny, 21 C."
    messages = proxy.chat.seen[1].json()["messages"]
    assert messages == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_w1", "content": "21 C, sun"},
    ]
    tools = proxy.chat.seen[0].json()["tools"]
    assert tools[0]["function"]["name"] == "get_weather"


async def test_demo_through_the_sdk(proxy: Proxy) -> None:
    def run(client: openai.OpenAI) -> tuple[Any, list[Any], Any]:
        whole = client.responses.create(model="demo", input="hi")
        events = list(client.responses.create(model="demo", input="hi", stream=True))
        with client.responses.stream(model="demo", input="hi") as stream:
            final = stream.get_final_response()
        return whole, events, final

    whole, events, final = await proxy.run(run)
    assert whole.output_text.startswith("You said: hi")
    assert final.output_text == whole.output_text
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage.output_tokens > 0


# --- errors ----------------------------------------------------------------------------------


async def test_unknown_model_is_a_404(proxy: Proxy) -> None:
    def run(client: openai.OpenAI) -> list[openai.NotFoundError]:
        errors = []
        for stream in (False, True):
            with pytest.raises(openai.NotFoundError) as info:
                client.responses.create(model="nope", input="hi", stream=stream)
            errors.append(info.value)
        return errors

    for exc in await proxy.run(run):
        assert exc.status_code == 404
        assert "nope" in exc.message


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_429_before_the_first_byte_is_a_status(proxy: Proxy, stream: bool) -> None:
    limited = json_reply(
        429,
        {
            "error": {
                "message": "Rate limit reached",
                "type": "requests",
                "code": "rate_limit_exceeded",
            }
        },
        [("retry-after", "20")],
    )
    proxy.responses.script = [limited]
    proxy.chat.script = [limited]

    def run(client: openai.OpenAI) -> list[openai.RateLimitError]:
        errors = []
        for model in ("gpt-5", "compat"):  # pass-through and translated
            with pytest.raises(openai.RateLimitError) as info:
                client.responses.create(model=model, input="hi", stream=stream)
            errors.append(info.value)
        return errors

    for exc in await proxy.run(run):
        assert exc.status_code == 429
        assert exc.response.headers["retry-after"] == "20"
        assert exc.response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_abc"}, "previous_response_id"),
        ({"store": True}, "store"),
        ({"background": True}, "background"),
    ],
)
async def test_stateful_requests_are_400s_saying_to_send_the_full_input(
    proxy: Proxy, extra: dict[str, Any], param: str
) -> None:
    def run(client: openai.OpenAI) -> openai.BadRequestError:
        with pytest.raises(openai.BadRequestError) as info:
            client.responses.create(model="gpt-5", input="hi", **extra)
        return info.value

    exc = await proxy.run(run)
    assert exc.status_code == 400
    assert exc.code == "unsupported_parameter"
    assert exc.param == param
    assert "send the full conversation in input" in exc.message
    assert not proxy.responses.seen  # never reaches an upstream


async def test_stored_responses_are_404s_that_say_nothing_is_kept(proxy: Proxy) -> None:
    def run(client: openai.OpenAI) -> list[openai.NotFoundError]:
        errors = []
        for call in (
            lambda: client.responses.retrieve("resp_abc"),
            lambda: client.responses.delete("resp_abc"),
            lambda: client.responses.cancel("resp_abc"),
            lambda: client.responses.input_items.list("resp_abc"),
        ):
            with pytest.raises(openai.NotFoundError) as info:
                call()
            errors.append(info.value)
        return errors

    for exc in await proxy.run(run):
        assert "resp_abc" in exc.message
        assert "stateless" in exc.message
        assert "store: false" in exc.message


async def test_stored_responses_still_need_the_key(proxy: Proxy) -> None:
    def run() -> openai.AuthenticationError:
        with openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-wrong", max_retries=0) as c:
            with pytest.raises(openai.AuthenticationError) as info:
                c.responses.retrieve("resp_abc")
            return info.value

    assert (await trio.to_thread.run_sync(run)).status_code == 401


async def test_wrong_key_is_401_and_bad_input_is_400(proxy: Proxy) -> None:
    def run() -> tuple[openai.AuthenticationError, openai.BadRequestError]:
        wrong = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-wrong", max_retries=0)
        with wrong as c, pytest.raises(openai.AuthenticationError) as auth:
            c.responses.create(model="demo", input="hi")
        with proxy.client() as c, pytest.raises(openai.BadRequestError) as bad:
            c.responses.create(model="demo", input="hi", tools=[{"type": "web_search"}])
        return auth.value, bad.value

    auth, bad = await trio.to_thread.run_sync(run)
    assert auth.status_code == 401
    assert bad.param == "tools[0].type"
    assert "web_search" in bad.message


async def test_failure_after_the_first_byte_ends_the_translated_stream_failed(
    proxy: Proxy,
) -> None:
    raw = (DATA / "anthropic" / "mid_stream_error.sse").read_bytes()
    proxy.claude.script = [sse_reply(raw, pieces=3)]

    def run(client: openai.OpenAI) -> tuple[list[Any], openai.APIError]:
        seen: list[Any] = []
        stream = client.responses.create(model="claude", input="hi", stream=True)
        with pytest.raises(openai.APIError) as info:
            seen.extend(stream)
        return seen, info.value

    seen, exc = await proxy.run(run)
    assert seen[0].type == "response.created"
    assert seen[-1].type == "response.failed"
    assert seen[-1].response.status == "failed"
    assert "Internal server error" in exc.message  # the upstream's error, in the error event


async def test_truncated_relayed_stream_ends_with_an_error_event(proxy: Proxy) -> None:
    raw = RESPONSES_SSE.read_bytes()
    cut = raw[: raw.index(b"event: response.output_item.done")]
    proxy.responses.script = [sse_reply(cut, pieces=2)]

    def run(client: openai.OpenAI) -> bytes:
        with client.responses.with_streaming_response.create(
            model="gpt-5", input="hi", stream=True
        ) as resp:
            return resp.read()

    received = events_of(await proxy.run(run))
    assert received[:-1] == events_of(cut)
    name, data = received[-1]
    error = json.loads(data)
    assert name == "error"
    assert error["type"] == "error"
    last = json.loads(received[-2][1])
    assert error["sequence_number"] == last["sequence_number"] + 1
    assert error["error"]["message"]


@pytest.mark.parametrize("model", ["gpt-5", "claude"])
async def test_client_disconnect_closes_the_upstream(proxy: Proxy, model: str) -> None:
    if model == "gpt-5":
        raw = RESPONSES_SSE.read_bytes()
        first = raw[: raw.index(b"event: response.in_progress")]
        fake = proxy.responses
    else:
        raw = (DATA / "anthropic" / "text.sse").read_bytes()
        first = raw[: raw.index(b"event: content_block_delta")]
        fake = proxy.claude
    fake.script = [Reply(body=[first, None])]  # then holds the stream open forever

    def run(client: openai.OpenAI) -> str:
        stream = client.responses.create(model=model, input="hi", stream=True)
        event = next(iter(stream))
        stream.close()
        return str(event.type)

    assert await proxy.run(run) == "response.created"
    with trio.fail_after(5):
        await fake.seen[0].closed.wait()


async def test_the_shipped_proxy_ini_serves_the_demo_to_the_responses_sdk() -> None:
    shipped = (Path(__file__).parent.parent / "proxy.ini").read_text()
    text = shipped.replace("listen = 127.0.0.1:8003", "listen = 127.0.0.1:0", 1)
    assert text != shipped
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(serve, config_from(text)))

        def run() -> tuple[Any, openai.APIStatusError]:
            with openai.OpenAI(base_url=bound[0] + "/v1", api_key="none", max_retries=0) as c:
                answer = c.responses.create(model="demo", input="hi")
                with pytest.raises(openai.APIStatusError) as info:  # no OPENAI_API_KEY here
                    c.responses.create(model="gpt-5", input="hi")
                return answer, info.value

        answer, disabled = await trio.to_thread.run_sync(run)
        nursery.cancel_scope.cancel()
    assert answer.output_text.startswith("You said: hi")
    assert disabled.status_code == 503
    assert "OPENAI_API_KEY" in disabled.message


async def test_the_python_blocks_of_docs_responses_clients_run_against_the_demo() -> None:
    text = (Path(__file__).parent.parent / "docs" / "responses-clients.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert len(blocks) == 2
    printed: list[str] = []
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(serve, config_from(DEMO_INI)))

        def run() -> None:
            namespace: dict[str, Any] = {
                "print": lambda *a, **kw: printed.append(" ".join(map(str, a)))
            }
            for block in blocks:
                exec(block.replace("http://localhost:8003", bound[0]), namespace)
            namespace["client"].close()

        await trio.to_thread.run_sync(run)
        nursery.cancel_scope.cancel()
    assert printed[0].startswith("You said: hi")
    assert "".join(printed[1:-1]).startswith("You said: Tell me a joke")
    assert printed[-1].startswith('get_weather {"input": "Weather in Paris?"} You said:')
