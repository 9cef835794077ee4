"""Keys, limits and secrets, end to end: per-key limits through the openai SDK, and no secret of
a run in its logs, responses or health output."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

import openai
import trio

from tests.conftest import config_from, make_client
from tests.fakes import FakeUpstream, json_reply
from trioproxy.server import serve
from trioproxy.service import Runtime
from trioproxy.upstream import HTTPClient

if TYPE_CHECKING:
    import pytest


HELLO = [{"role": "user", "content": "hello"}]


async def test_per_key_concurrency_limit_is_429_and_the_sdk_retry_succeeds() -> None:
    config = config_from(
        """
[proxy]
listen = 127.0.0.1:0

[key:alice]
key = sk-alice-0123456789abcdef
max_concurrent = 1

[upstream:demo]
type = demo
demo_delay = 0.01

[model:demo]
upstream = demo
"""
    )
    http = HTTPClient()
    runtime = Runtime(config, http)
    async with trio.open_nursery() as nursery:
        url = (await nursery.start(partial(serve, config, runtime=runtime)))[0]

        def slow() -> None:
            with openai.OpenAI(base_url=url + "/v1", api_key="sk-alice-0123456789abcdef") as client:
                list(client.chat.completions.create(model="demo", messages=HELLO, stream=True))

        def no_retry() -> openai.RateLimitError:
            with openai.OpenAI(
                base_url=url + "/v1", api_key="sk-alice-0123456789abcdef", max_retries=0
            ) as c:
                try:
                    c.chat.completions.create(model="demo", messages=HELLO)
                except openai.RateLimitError as exc:
                    return exc
            raise AssertionError("expected 429")

        def with_retry() -> str:
            with openai.OpenAI(
                base_url=url + "/v1", api_key="sk-alice-0123456789abcdef", max_retries=2
            ) as c:
                reply = c.chat.completions.create(model="demo", messages=HELLO)
                return reply.choices[0].message.content or ""

        async with trio.open_nursery() as inner:
            inner.start_soon(trio.to_thread.run_sync, slow)
            while not runtime.lifecycle.streams:  # noqa: ASYNC110  (no event says "in flight")
                await trio.sleep(0.01)
            limited = await trio.to_thread.run_sync(no_retry)
            retried = await trio.to_thread.run_sync(with_retry)
        nursery.cancel_scope.cancel()
    await http.aclose()
    assert limited.status_code == 429
    assert limited.response.headers["retry-after"] == "1"
    assert limited.code == "rate_limit_exceeded"
    assert retried.startswith("You said: hello")


async def test_no_secret_appears_in_logs_responses_or_health(
    http_client: HTTPClient, caplog: pytest.LogCaptureFixture
) -> None:
    upstream_key = "sk-ant-upstream-SECRET-1234567890"
    client_key = "sk-client-SECRET-abcdefghij"
    # An upstream that echoes request headers in its error body (some gateways do).
    echo = json_reply(
        401,
        {
            "type": "error",
            "error": {"type": "authentication_error", "message": f"bad x-api-key {upstream_key}"},
        },
    )
    fake = FakeUpstream(echo)
    caplog.set_level(logging.DEBUG)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(fake.serve)
        config = config_from(
            f"""
[proxy]
listen = 127.0.0.1:0
api_keys = ops:{client_key}

[upstream:claude]
type = anthropic
base_url = {url}
api_key = ${{ANTHROPIC_API_KEY}}

[model:claude]
upstream = claude
""",
            {"ANTHROPIC_API_KEY": upstream_key},
        )
        client = make_client(config, http_client)
        outputs = []
        for key in (client_key, "sk-client-SECRET-wrong-key"):
            resp = await client.chat({"model": "claude", "messages": HELLO}, key=key)
            outputs.append(resp.body.decode() + repr(resp.headers))
        outputs.append((await client.request("GET", "/health")).body.decode())
        outputs.append(client.runtime.service.render_metrics())
        outputs.append(repr(config))
        nursery.cancel_scope.cancel()
    assert fake.seen[0].headers["x-api-key"] == upstream_key  # it did reach the upstream
    everything = "\n".join(outputs) + "\n".join(
        r.getMessage() + str(r.__dict__) for r in caplog.records
    )
    assert "SECRET" not in everything
    assert "ops" in everything  # the key's name is what logs and metrics show
