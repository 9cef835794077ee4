"""The streaming engine against a scripted upstream on loopback: cancellation at every phase,
held headers, retries, failover, timeouts. Upstreams speak Anthropic's wire format."""

from __future__ import annotations

import json
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio

from tests.conftest import ASGIClient, config_from, make_client
from tests.fakes import FakeUpstream, Reply, json_reply, sse_reply
from tests.support import PROTOCOL, assert_stream_contract, sse_payloads

if TYPE_CHECKING:
    from trioproxy.upstream import HTTPClient

STREAM_TEXT = (PROTOCOL / "anthropic" / "stream_text.sse").read_bytes()
NONSTREAM_TEXT = json.loads((PROTOCOL / "anthropic" / "nonstream_text.json").read_text())
HELLO = {"model": "claude", "messages": [{"role": "user", "content": "hi"}]}
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

# Cancellation must reach the upstream within this long (DESIGN.md "Cancellation").
CLOSE_WITHIN = 0.1


def anthropic_ini(*urls: str, extra: str = "", keepalive: float = 15) -> str:
    settings = {"max_retries": "2", "retry_max_wait": "5"}
    for line in extra.splitlines():  # `extra` overrides the defaults above, key by key
        if line.strip():
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    upstream_settings = "".join(f"{k} = {v}\n" for k, v in settings.items())
    sections = [f"[proxy]\nlisten = 127.0.0.1:0\nkeepalive_interval = {keepalive}\n"]
    names = []
    for i, url in enumerate(urls):
        name = f"up{i}"
        names.append(name)
        sections.append(
            f"[upstream:{name}]\ntype = anthropic\nbase_url = {url}\napi_key = sk-ant-test-{i}\n"
            + upstream_settings
        )
    sections.append(f"[model:claude]\nupstream = {', '.join(names)}\nupstream_model = claude-x\n")
    return "\n".join(sections)


async def _client(
    nursery: trio.Nursery, http: HTTPClient, *fakes: FakeUpstream, **kw: object
) -> ASGIClient:
    urls = [await nursery.start(fake.serve) for fake in fakes]
    return make_client(config_from(anthropic_ini(*urls, **kw)), http)  # type: ignore[arg-type]


async def test_anthropic_stream_relayed_with_the_upstream_request_checked(
    http_client: HTTPClient,
) -> None:
    fake = FakeUpstream(sse_reply(STREAM_TEXT, pieces=7))
    async with trio.open_nursery() as nursery:
        client = await _client(nursery, http_client, fake)
        resp = await client.chat(
            {**HELLO, "stream": True, "stream_options": {"include_usage": True}}
        )
        nursery.cancel_scope.cancel()
    assert resp.status == 200
    assert_stream_contract(sse_payloads(resp.body), include_usage=True)
    sent = fake.seen[0]
    assert sent.target == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-test-0"
    assert "authorization" not in sent.headers
    assert sent.headers["anthropic-version"]
    assert sent.json()["model"] == "claude-x"
    assert sent.json()["stream"] is True


async def test_upstream_error_before_the_first_event_is_a_real_status(
    http_client: HTTPClient,
) -> None:
    fake = FakeUpstream(
        json_reply(
            429,
            {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
            [("retry-after", "30"), ("request-id", "req_abc")],
        )
    )
    async with trio.open_nursery() as nursery:
        client = await _client(nursery, http_client, fake)
        resp = await client.chat({**HELLO, "stream": True})
        nursery.cancel_scope.cancel()
    assert resp.status == 429
    assert resp.headers["retry-after"] == "30"
    assert resp.json()["error"]["message"] == "slow down"
    assert resp.json()["error"]["code"] == "rate_limit_exceeded"
    assert len(fake.seen) == 1  # 30 s is longer than the retry budget: not retried


async def test_a_529_is_retried_and_then_streams_normally(http_client: HTTPClient) -> None:
    fake = FakeUpstream(
        json_reply(529, OVERLOADED, [("retry-after-ms", "10")]), sse_reply(STREAM_TEXT, pieces=3)
    )
    async with trio.open_nursery() as nursery:
        client = await _client(nursery, http_client, fake)
        resp = await client.chat({**HELLO, "stream": True})
        nursery.cancel_scope.cancel()
    assert resp.status == 200
    assert_stream_contract(sse_payloads(resp.body), include_usage=False)
    assert len(fake.seen) == 2


async def test_failover_reaches_the_second_upstream(http_client: HTTPClient) -> None:
    down = FakeUpstream(json_reply(529, OVERLOADED, [("retry-after-ms", "1")]))
    up = FakeUpstream(sse_reply(STREAM_TEXT))
    async with trio.open_nursery() as nursery:
        client = await _client(nursery, http_client, down, up)
        resp = await client.chat({**HELLO, "stream": True})
        nursery.cancel_scope.cancel()
    assert resp.status == 200
    assert len(down.seen) == 3  # the first try and max_retries = 2 retries
    assert len(up.seen) == 1
    assert up.seen[0].headers["x-api-key"] == "sk-ant-test-1"


async def test_a_client_fault_is_not_retried_nor_failed_over(http_client: HTTPClient) -> None:
    bad = json_reply(
        400, {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    )
    first, second = FakeUpstream(bad), FakeUpstream(sse_reply(STREAM_TEXT))
    async with trio.open_nursery() as nursery:
        client = await _client(nursery, http_client, first, second)
        resp = await client.chat({**HELLO, "stream": True})
        nursery.cancel_scope.cancel()
    assert resp.status == 400
    assert len(first.seen) == 1 and not second.seen


async def test_mid_stream_upstream_error_becomes_one_error_chunk(http_client: HTTPClient) -> None:
    raw = (PROTOCOL / "anthropic" / "stream_error_overloaded.sse").read_bytes()
    fake = FakeUpstream(sse_reply(raw))
    async with trio.open_nursery() as nursery:
        client = await _client(nursery, http_client, fake)
        resp = await client.chat({**HELLO, "stream": True})
        nursery.cancel_scope.cancel()
    assert resp.status == 200
    payloads = sse_payloads(resp.body)
    assert "[DONE]" not in payloads
    assert payloads[-1]["error"]["type"] == "overloaded_error"
    assert sum("error" in p for p in payloads) == 1


async def test_truncated_upstream_stream_is_an_error_not_a_clean_finish(
    http_client: HTTPClient,
) -> None:
    cut = STREAM_TEXT[: STREAM_TEXT.index(b"event: message_delta")]
    fake = FakeUpstream(sse_reply(cut, pieces=2))
    async with trio.open_nursery() as nursery:
        client = await _client(nursery, http_client, fake)
        resp = await client.chat({**HELLO, "stream": True})
        nursery.cancel_scope.cancel()
    payloads = sse_payloads(resp.body)
    assert "[DONE]" not in payloads
    assert payloads[-1]["error"]["code"] == "upstream_protocol_error"


async def test_held_headers_then_keepalive_during_a_silent_upstream(
    http_client: HTTPClient,
) -> None:
    slow = Reply(body=[0.5, STREAM_TEXT])  # head at once, then 0.5 s of silence
    fake = FakeUpstream(slow)
    async with trio.open_nursery() as nursery:
        client = await _client(nursery, http_client, fake, keepalive=0.1)
        resp = await client.chat({**HELLO, "stream": True})
        nursery.cancel_scope.cancel()
    assert resp.status == 200
    assert resp.body.startswith(b": keep-alive\n\n")
    assert_stream_contract(sse_payloads(resp.body), include_usage=False)


async def test_first_byte_timeout_answers_504(http_client: HTTPClient) -> None:
    fake = FakeUpstream(Reply(delay_head=30.0))
    async with trio.open_nursery() as nursery:
        client = await _client(
            nursery, http_client, fake, extra="first_byte_timeout = 0.2\nmax_retries = 0\n"
        )
        resp = await client.chat(HELLO)
        nursery.cancel_scope.cancel()
    assert resp.status == 504
    assert resp.json()["error"]["code"] == "upstream_timeout"


async def test_idle_timeout_mid_stream_is_an_error_chunk(http_client: HTTPClient) -> None:
    head = STREAM_TEXT[: STREAM_TEXT.index(b"event: content_block_delta")]
    fake = FakeUpstream(Reply(body=[head, None]))
    async with trio.open_nursery() as nursery:
        client = await _client(nursery, http_client, fake, extra="read_timeout = 0.2\n")
        resp = await client.chat({**HELLO, "stream": True})
        nursery.cancel_scope.cancel()
    payloads = sse_payloads(resp.body)
    assert payloads[-1]["error"]["code"] == "upstream_timeout"


def _phase_reply(phase: str) -> Reply:
    head = STREAM_TEXT[: STREAM_TEXT.index(b"event: content_block_delta")]
    if phase == "first_byte":
        return Reply(delay_head=60.0)
    if phase == "mid_stream":
        return Reply(body=[head, None])
    return Reply(headers=[("content-type", "application/json")], body=[None])  # non_streaming


@pytest.mark.parametrize("phase", ["first_byte", "mid_stream", "non_streaming"])
async def test_client_disconnect_closes_the_upstream_promptly(
    http_client: HTTPClient, phase: str
) -> None:
    fake = FakeUpstream(_phase_reply(phase))
    gone = trio.Event()
    async with trio.open_nursery() as nursery:
        client = await _client(nursery, http_client, fake)
        body = {**HELLO, "stream": phase != "non_streaming"}
        nursery.start_soon(partial(client.chat, body, disconnect=gone))
        await fake.request_arrived.wait()
        if phase == "mid_stream":
            await trio.sleep(0.05)  # let the first events through
        left_at = trio.current_time()
        gone.set()
        with trio.fail_after(5):
            await fake.seen[0].closed.wait()
        nursery.cancel_scope.cancel()
    closed_at = fake.seen[0].closed_at
    assert closed_at is not None
    assert closed_at - left_at < CLOSE_WITHIN


async def test_client_disconnect_while_connecting_closes_the_upstream(
    http_client: HTTPClient,
) -> None:
    # An upstream that accepted the TCP connection but never reads: we are still "connecting".
    accepted = trio.Event()
    closed = trio.Event()
    closed_at = 0.0

    async def silent(stream: trio.SocketStream) -> None:
        nonlocal closed_at
        accepted.set()
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        closed_at = trio.current_time()
        closed.set()

    gone = trio.Event()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        client = make_client(config_from(anthropic_ini(f"http://127.0.0.1:{port}")), http_client)
        nursery.start_soon(partial(client.chat, {**HELLO, "stream": True}, disconnect=gone))
        await accepted.wait()
        left_at = trio.current_time()
        gone.set()
        with trio.fail_after(5):
            await closed.wait()
        nursery.cancel_scope.cancel()
    assert closed_at - left_at < CLOSE_WITHIN


async def test_only_configured_client_headers_reach_the_upstream(http_client: HTTPClient) -> None:
    fake = FakeUpstream(sse_reply(STREAM_TEXT))
    async with trio.open_nursery() as nursery:
        client = await _client(nursery, http_client, fake, extra="forward_headers = x-trace-id\n")
        headers = [
            ("content-type", "application/json"),
            ("authorization", "Bearer sk-client-key"),
            ("x-api-key", "sk-client-key"),
            ("x-trace-id", "trace-42"),
            ("x-other", "not forwarded"),
            ("connection", "keep-alive, x-other"),
        ]
        body = {**HELLO, "stream": True}
        resp = await client.request("POST", "/v1/chat/completions", body=body, headers=headers)
        nursery.cancel_scope.cancel()
    assert resp.status == 200
    sent = fake.seen[0].headers
    assert sent["x-trace-id"] == "trace-42"
    assert "x-other" not in sent
    assert sent["x-api-key"] == "sk-ant-test-0"  # ours, not the client's
    assert "authorization" not in sent
    assert "sk-client-key" not in repr(sent)
    assert sent.get("connection") != "keep-alive, x-other"  # hop-by-hop: never passed on


def test_credentials_can_never_be_forwarded() -> None:
    from trioproxy.errors import ConfigError

    for name in ("authorization", "x-api-key", "cookie", "connection"):
        with pytest.raises(ConfigError, match="forward_headers"):
            config_from(anthropic_ini("http://127.0.0.1:9", extra=f"forward_headers = {name}\n"))


async def test_shutdown_expiry_answers_a_waiting_non_streaming_request_with_503(
    http_client: HTTPClient,
) -> None:
    from trioproxy.record import Outcome

    # the upstream sends its head, then holds the body
    fake = FakeUpstream(Reply(headers=[("content-type", "application/json")], body=[None]))
    outcomes: list[Outcome | None] = []
    async with trio.open_nursery() as nursery:
        client = await _client(nursery, http_client, fake)
        client.runtime.on_finish.append(lambda record: outcomes.append(record.outcome))
        results = []
        answered = trio.Event()

        async def ask() -> None:
            results.append(await client.chat(HELLO))
            answered.set()

        nursery.start_soon(ask)
        with trio.fail_after(10):
            await fake.request_arrived.wait()
        client.runtime.lifecycle.expire()
        with trio.fail_after(5):
            await fake.seen[0].closed.wait()
            await answered.wait()
        nursery.cancel_scope.cancel()
    (resp,) = results
    assert resp.status == 503
    assert resp.json()["error"]["code"] == "server_shutdown"
    assert outcomes == [Outcome.SHUTDOWN]


@pytest.mark.parametrize(("extra", "connections"), [("", 1), ("max_idle_connections = 0\n", 3)])
async def test_each_upstreams_pool_settings_reach_the_http_client(
    http_client: HTTPClient, extra: str, connections: int
) -> None:
    fake = FakeUpstream(json_reply(200, NONSTREAM_TEXT))
    async with trio.open_nursery() as nursery:
        client = await _client(nursery, http_client, fake, extra=extra)
        for _ in range(3):
            assert (await client.chat(HELLO)).status == 200
        nursery.cancel_scope.cancel()
    assert fake.connections == connections
