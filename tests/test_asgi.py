"""The ASGI app driven in memory: the stream contract, errors before and after the first byte,
auth, validation, disconnects, keep-alive. The demo upstream stands in for a real one."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
import trio

from tests.conftest import DEMO_INI, ASGIClient, config_from, make_client
from tests.support import assert_stream_contract, sse_payloads
from trioproxy.record import Outcome

if TYPE_CHECKING:
    from trioproxy.upstream import HTTPClient

HELLO = {"model": "demo", "messages": [{"role": "user", "content": "hello there"}]}


async def test_stream_follows_the_chat_stream_contract(demo_client: ASGIClient) -> None:
    resp = await demo_client.chat({**HELLO, "stream": True})
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["cache-control"] == "no-cache"
    assert resp.headers["x-accel-buffering"] == "no"
    assert resp.headers["x-request-id"]
    assert resp.body.endswith(b"data: [DONE]\n\n")
    assert b"event:" not in resp.body and b"\nid:" not in resp.body and b"retry:" not in resp.body
    payloads = sse_payloads(resp.body)
    assert_stream_contract(payloads, include_usage=False)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in payloads[:-1])
    assert text.startswith("You said: hello there")


async def test_stream_with_include_usage_ends_with_one_usage_chunk(demo_client: ASGIClient) -> None:
    body = {**HELLO, "stream": True, "stream_options": {"include_usage": True}}
    payloads = sse_payloads((await demo_client.chat(body)).body)
    assert_stream_contract(payloads, include_usage=True)
    usage = payloads[-2]["usage"]
    assert usage["prompt_tokens"] == 2
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_non_streaming_answer_is_a_chat_completion(demo_client: ASGIClient) -> None:
    resp = await demo_client.chat(HELLO)
    assert resp.status == 200
    body = resp.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"].startswith("You said: hello there")
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 2


async def test_max_tokens_cuts_the_demo_with_finish_length(demo_client: ASGIClient) -> None:
    body = (await demo_client.chat({**HELLO, "max_tokens": 3})).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    assert body["choices"][0]["message"]["content"] == "You said: hello "


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[]", 400, None),
        ({"messages": [{"role": "user", "content": "x"}]}, 400, "model"),
        ({"model": "demo"}, 400, "messages"),
        ({"model": "demo", "messages": []}, 400, "messages"),
        (
            {"model": "demo", "messages": [{"role": "wizard", "content": "x"}]},
            400,
            "messages[0].role",
        ),
        ({**HELLO, "stream": "yes"}, 400, "stream"),
        ({**HELLO, "max_tokens": 0}, 400, "max_tokens"),
        ({**HELLO, "temperature": 3}, 400, "temperature"),
        ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
    ],
)
async def test_bad_requests_get_an_openai_error_naming_the_field(
    demo_client: ASGIClient, body: bytes | dict[str, object], status: int, param: str | None
) -> None:
    resp = await demo_client.chat(body)  # type: ignore[arg-type]
    assert resp.status == status
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param


async def test_unknown_route_and_wrong_method(demo_client: ASGIClient) -> None:
    assert (await demo_client.request("GET", "/v1/nothing")).status == 404
    resp = await demo_client.request("GET", "/v1/chat/completions")
    assert resp.status == 405
    assert resp.json()["error"]["code"] == "method_not_allowed"


async def test_body_over_the_limit_is_413(http_client: HTTPClient) -> None:
    client = make_client(
        config_from(DEMO_INI.replace("[proxy]", "[proxy]\nmax_body_bytes = 100")), http_client
    )
    resp = await client.chat({**HELLO, "messages": [{"role": "user", "content": "x" * 200}]})
    assert resp.status == 413
    assert resp.json()["error"]["code"] == "request_too_large"


async def test_keys_are_required_when_configured(http_client: HTTPClient) -> None:
    ini = DEMO_INI.replace("[proxy]", "[proxy]\napi_keys = sk-good")
    client = make_client(config_from(ini), http_client)
    missing = await client.chat(HELLO)
    assert missing.status == 401
    assert missing.json()["error"]["type"] == "authentication_error"
    wrong = await client.chat(HELLO, key="sk-bad")
    assert wrong.status == 401
    assert "sk-bad" not in wrong.body.decode()
    assert (await client.chat(HELLO, key="sk-good")).status == 200
    models = await client.request("GET", "/v1/models")
    assert models.status == 401
    health = await client.request("GET", "/health")
    assert health.status == 200
    assert "sk-good" not in health.body.decode()


async def test_models_lists_configured_models(demo_client: ASGIClient) -> None:
    body = (await demo_client.request("GET", "/v1/models")).json()
    assert body["object"] == "list"
    assert {"id": "demo", "object": "model", "created": 0, "owned_by": "demo"} in body["data"]


async def test_health_reports_upstreams_without_secrets(http_client: HTTPClient) -> None:
    ini = DEMO_INI + "\n[upstream:claude]\ntype = anthropic\napi_key = ${ANTHROPIC_API_KEY:-}\n"
    client = make_client(config_from(ini), http_client)
    health = (await client.request("GET", "/health")).json()
    assert health["status"] == "ok"
    assert health["upstreams"]["demo"]["enabled"] is True
    assert health["upstreams"]["claude"]["enabled"] is False
    assert "ANTHROPIC_API_KEY" in health["upstreams"]["claude"]["reason"]


async def test_disconnect_mid_stream_stops_the_demo_at_once(http_client: HTTPClient) -> None:
    ini = DEMO_INI.replace("demo_delay = 0", "demo_delay = 0.05")
    client = make_client(config_from(ini), http_client)
    gone = trio.Event()
    pieces = 0

    def on_piece(_: bytes) -> None:
        nonlocal pieces
        pieces += 1
        if pieces == 3:
            gone.set()

    with trio.fail_after(5):
        resp = await client.chat({**HELLO, "stream": True}, disconnect=gone, on_piece=on_piece)
    assert pieces == 3
    assert not resp.complete or b"[DONE]" not in resp.body


async def test_keepalive_comments_and_held_headers_during_silence(
    http_client: HTTPClient, autojump_clock: trio.testing.MockClock
) -> None:
    ini = DEMO_INI.replace("demo_delay = 0", "demo_delay = 40").replace(
        "keepalive_interval = 15", "keepalive_interval = 15"
    )
    client = make_client(config_from(ini), http_client)
    resp = await client.chat({**HELLO, "max_tokens": 2, "stream": True})
    assert resp.status == 200
    raw = resp.body
    assert raw.count(b": keep-alive\n\n") >= 4  # two 40 s silences at a 15 s interval
    assert_stream_contract(sse_payloads(raw), include_usage=False)


async def test_shutdown_expiry_ends_a_stream_with_an_error_chunk(http_client: HTTPClient) -> None:
    ini = DEMO_INI.replace("demo_delay = 0", "demo_delay = 0.02")
    client = make_client(config_from(ini), http_client)
    pieces: list[bytes] = []

    def on_piece(piece: bytes) -> None:
        pieces.append(piece)
        if len(pieces) == 2:
            client.runtime.lifecycle.expire()

    resp = await client.chat({**HELLO, "stream": True}, on_piece=on_piece)
    payloads = sse_payloads(resp.body)
    assert payloads[-1]["error"]["code"] == "server_shutdown"
    assert "[DONE]" not in payloads
    assert not any(c.get("choices") and c["choices"][0]["finish_reason"] for c in payloads[:-1])


async def test_requests_while_draining_get_503(demo_client: ASGIClient) -> None:
    demo_client.runtime.lifecycle.drain()
    resp = await demo_client.chat(HELLO)
    assert resp.status == 503
    assert resp.json()["error"]["code"] == "server_shutdown"


async def test_request_id_is_propagated(demo_client: ASGIClient) -> None:
    resp = await demo_client.request(
        "POST", "/v1/chat/completions", body=HELLO, headers=[("x-request-id", "abc-123")]
    )
    assert resp.headers["x-request-id"] == "abc-123"
    assert json.loads(resp.body)["object"] == "chat.completion"


async def test_oversized_headers_get_431(demo_client: ASGIClient) -> None:
    resp = await demo_client.request("GET", "/health", headers=[("x-big", "a" * 40_000)])
    assert resp.status == 431
    assert resp.json()["error"]["code"] == "request_headers_too_large"


async def test_a_request_arriving_after_expiry_is_ended_by_shutdown_at_once() -> None:
    from trioproxy.record import RequestRecord
    from trioproxy.service import Lifecycle

    shutdown = Lifecycle()
    shutdown.expire()
    record = RequestRecord(request_id="r", started=0.0, stream=False)
    with trio.CancelScope() as scope, shutdown.guard(scope, record):
        await trio.sleep_forever()
    assert scope.cancelled_caught
    assert record.outcome is Outcome.SHUTDOWN
    assert not shutdown._guarded, "the registry forgets a request once it is over"


async def test_anthropic_clients_get_anthropic_errors_on_every_route(
    demo_client: ASGIClient,
) -> None:
    wrong_method = await demo_client.request("GET", "/v1/messages")
    assert wrong_method.status == 405
    assert wrong_method.json()["type"] == "error"
    assert wrong_method.headers["request-id"] == wrong_method.headers["x-request-id"]
    unknown = await demo_client.request(
        "GET", "/v1/messages/batches", headers=[("anthropic-version", "2023-06-01")]
    )
    assert unknown.status == 404
    assert unknown.json()["error"]["type"] == "not_found_error"
    openai_style = await demo_client.request("GET", "/v1/nothing")
    assert set(openai_style.json()["error"]) == {"message", "type", "param", "code"}
