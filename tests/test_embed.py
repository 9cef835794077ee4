"""Embedding: open_proxy inside a test's nursery, in-process streams beside HTTP ones."""

from __future__ import annotations

import openai
import pytest
import trio

import trioproxy
from tests.conftest import config_from
from tests.fakes import FakeUpstream, Reply
from tests.support import PROTOCOL

STREAM_TEXT = (PROTOCOL / "anthropic" / "stream_text.sse").read_bytes()
HEAD = STREAM_TEXT[: STREAM_TEXT.index(b"event: content_block_delta")]
HELLO = [{"role": "user", "content": "hello"}]


def ini(upstream_url: str = "http://127.0.0.1:9") -> str:
    return f"""
[proxy]
listen = 127.0.0.1:0

[upstream:demo]
type = demo
demo_delay = 0.001

[upstream:claude]
type = anthropic
base_url = {upstream_url}
api_key = sk-ant-test
max_retries = 0

[model:demo]
upstream = demo

[model:claude]
upstream = claude
"""


async def test_in_process_and_http_streams_at_the_same_time() -> None:
    async with trioproxy.open_proxy(config_from(ini())) as proxy:

        def over_http() -> str:
            with openai.OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0) as client:
                stream = client.chat.completions.create(model="demo", messages=HELLO, stream=True)
                return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        results: dict[str, str] = {}

        async def in_process() -> None:
            parts = []
            async for chunk in proxy.chat({"model": "demo", "messages": HELLO}):
                parts.append(chunk["choices"][0]["delta"].get("content", ""))
            results["inproc"] = "".join(parts)

        async def http() -> None:
            results["http"] = await trio.to_thread.run_sync(over_http)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_process)
            nursery.start_soon(http)
        complete = await proxy.complete({"model": "demo", "messages": HELLO})
        stats = proxy.statistics()
    assert results["inproc"] == results["http"]
    assert results["inproc"].startswith("You said: hello")
    assert complete["choices"][0]["message"]["content"] == results["inproc"]
    assert stats.requests >= 3


async def test_in_process_errors_are_proxy_errors() -> None:
    async with trioproxy.open_proxy(config_from(ini()), serve_http=False) as proxy:
        with pytest.raises(trioproxy.UnknownModel):
            async for _ in proxy.chat({"model": "nope", "messages": HELLO}):
                pass
        with pytest.raises(trioproxy.ClientError) as info:
            await proxy.complete({"model": "demo", "messages": "not a list"})
        assert info.value.param == "messages"


async def test_breaking_out_of_an_in_process_stream_closes_the_upstream() -> None:
    fake = FakeUpstream(Reply(body=[HEAD, None]))
    async with trio.open_nursery() as nursery:
        url = await nursery.start(fake.serve)
        async with trioproxy.open_proxy(config_from(ini(url)), serve_http=False) as proxy:
            stream = proxy.chat({"model": "claude", "messages": HELLO})
            async for chunk in stream:
                assert chunk["choices"][0]["delta"]["role"] == "assistant"
                break
            await stream.aclose()  # type: ignore[attr-defined]
            with trio.fail_after(5):
                await fake.seen[0].closed.wait()
        nursery.cancel_scope.cancel()


async def test_leaving_open_proxy_ends_streams_in_flight() -> None:
    fake = FakeUpstream(Reply(body=[HEAD, None]))
    outcome: list[BaseException] = []
    ended = trio.Event()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(fake.serve)
        async with trioproxy.open_proxy(config_from(ini(url))) as proxy:

            async def reader() -> None:
                try:
                    async for _ in proxy.chat({"model": "claude", "messages": HELLO}):
                        pass
                except trioproxy.ProxyError as exc:
                    outcome.append(exc)
                ended.set()

            nursery.start_soon(reader)
            await fake.request_arrived.wait()
        with trio.fail_after(5):
            await fake.seen[0].closed.wait()
            await ended.wait()
        nursery.cancel_scope.cancel()
    assert isinstance(outcome[0], trioproxy.ServerShutdown)
