"""The WebSocket face through the real server and a real client (trio-websocket)."""

from __future__ import annotations

import gc
import json
import warnings
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.conftest import config_from, on_server
from tests.fakes import FakeUpstream, Reply, json_reply
from tests.support import PROTOCOL
from trioproxy.server import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from trio_websocket import WebSocketConnection

STREAM_TEXT = (PROTOCOL / "anthropic" / "stream_text.sse").read_bytes()
HEAD = STREAM_TEXT[: STREAM_TEXT.index(b"event: content_block_delta")]


def ws_ini(upstream_url: str) -> str:
    return f"""
[proxy]
listen = 127.0.0.1:0
api_keys = sk-ws-good
ws_max_message_bytes = 65536

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


class Harness:
    def __init__(self, ws_url: str, fake: FakeUpstream) -> None:
        self.ws_url = ws_url
        self.fake = fake


@pytest.fixture
async def harness(server_kind: str) -> AsyncIterator[Harness]:
    fake = FakeUpstream(Reply(body=[HEAD, None]))
    async with trio.open_nursery() as nursery:
        upstream_url = await nursery.start(fake.serve)
        config = config_from(on_server(ws_ini(upstream_url), server_kind))
        urls = await nursery.start(partial(serve, config))
        yield Harness(urls[0].replace("http://", "ws://") + "/v1/ws", fake)
        nursery.cancel_scope.cancel()
    collect_client_socket()


def create(request_id: str, model: str = "demo", content: str = "hi") -> str:
    return json.dumps(
        {
            "type": "chat.completions.create",
            "id": request_id,
            "body": {"model": model, "messages": [{"role": "user", "content": content}]},
        }
    )


def collect_client_socket() -> None:
    """trio-websocket's client leaves its socket to the garbage collector when the *server* closes
    first (checked: the leaked socket's peer is our server's port, allocated by the client's
    `open_tcp_stream`). Collect it here, so its ResourceWarning is not blamed on a later test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


async def receive_json(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(10):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def until_terminal(
    ws: WebSocketConnection, request_id: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    chunks = []
    while True:
        message = await receive_json(ws)
        if message["id"] != request_id:
            continue
        if message["type"] == "chunk":
            chunks.append(message["chunk"])
        else:
            return chunks, message


async def test_header_auth_and_a_full_stream(harness: Harness) -> None:
    async with open_websocket_url(
        harness.ws_url,
        subprotocols=["trioproxy.v1"],
        extra_headers=[(b"authorization", b"Bearer sk-ws-good")],
    ) as ws:
        assert ws.subprotocol == "trioproxy.v1"
        await ws.send_message(create("c1"))
        chunks, terminal = await until_terminal(ws, "c1")
    assert terminal == {"type": "done", "id": "c1"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.startswith("You said: hi")


async def test_subprotocol_auth_for_browsers(harness: Harness) -> None:
    async with open_websocket_url(
        harness.ws_url, subprotocols=["trioproxy.v1", "bearer.sk-ws-good"]
    ) as ws:
        assert ws.subprotocol == "trioproxy.v1"  # the key is never echoed back
        await ws.send_message(create("c1"))
        _, terminal = await until_terminal(ws, "c1")
    assert terminal["type"] == "done"


@pytest.mark.parametrize("offered", [["trioproxy.v1"], ["trioproxy.v1", "bearer.sk-wrong"]])
async def test_bad_or_missing_key_closes_with_1008(harness: Harness, offered: list[str]) -> None:
    async with open_websocket_url(harness.ws_url, subprotocols=offered) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await receive_json(ws)
    assert info.value.reason.code == 1008
    assert "sk-wrong" not in (info.value.reason.reason or "")


async def test_two_requests_one_cancelled_the_other_done(harness: Harness) -> None:
    async with open_websocket_url(
        harness.ws_url, subprotocols=["trioproxy.v1", "bearer.sk-ws-good"]
    ) as ws:
        await ws.send_message(create("slow", model="claude"))
        with trio.fail_after(10):
            await harness.fake.request_arrived.wait()
        await ws.send_message(create("fast"))
        await ws.send_message(json.dumps({"type": "cancel", "id": "slow"}))
        seen: dict[str, str] = {}
        while len(seen) < 2:
            message = await receive_json(ws)
            if message["type"] != "chunk":
                seen[message["id"]] = message["type"]
        with trio.fail_after(5):
            await harness.fake.seen[0].closed.wait()  # the cancelled request's upstream saw EOF
    assert seen == {"slow": "cancelled", "fast": "done"}


async def test_upstream_error_reaches_only_its_own_request(harness: Harness) -> None:
    harness.fake.script = [
        json_reply(503, {"type": "error", "error": {"type": "api_error", "message": "down"}})
    ]
    async with open_websocket_url(
        harness.ws_url, subprotocols=["trioproxy.v1", "bearer.sk-ws-good"]
    ) as ws:
        await ws.send_message(create("bad", model="claude"))
        await ws.send_message(create("good"))
        results = {}
        while len(results) < 2:
            message = await receive_json(ws)
            if message["type"] != "chunk":
                results[message["id"]] = message
    assert results["bad"]["type"] == "error"
    assert results["bad"]["error"]["message"] == "down"
    assert results["good"]["type"] == "done"


async def test_malformed_messages_get_errors_and_the_socket_stays(harness: Harness) -> None:
    async with open_websocket_url(
        harness.ws_url, subprotocols=["trioproxy.v1", "bearer.sk-ws-good"]
    ) as ws:
        await ws.send_message("{not json")
        assert (await receive_json(ws))["id"] is None
        await ws.send_message(
            json.dumps({"type": "chat.completions.create", "id": "x1", "body": {"model": "demo"}})
        )
        error = await receive_json(ws)
        assert error == {"type": "error", "id": "x1", "error": error["error"]}
        assert error["error"]["param"] == "body.messages"
        await ws.send_message(json.dumps({"type": "dance", "id": "x2"}))
        assert (await receive_json(ws))["error"]["param"] == "type"
        await ws.send_message(json.dumps({"type": "cancel", "id": "nothing"}))
        assert (await receive_json(ws))["type"] == "error"
        await ws.send_message(create("ok"))
        _, terminal = await until_terminal(ws, "ok")
        assert terminal["type"] == "done"


async def test_oversized_message_closes_with_1009(harness: Harness) -> None:
    async with open_websocket_url(
        harness.ws_url, subprotocols=["trioproxy.v1", "bearer.sk-ws-good"]
    ) as ws:
        await ws.send_message(create("big", content="x" * 100_000))
        with pytest.raises(ConnectionClosed) as info:
            await receive_json(ws)
    assert info.value.reason.code == 1009


async def test_client_vanishing_mid_stream_closes_every_upstream(harness: Harness) -> None:
    async with open_websocket_url(
        harness.ws_url, subprotocols=["trioproxy.v1", "bearer.sk-ws-good"]
    ) as ws:
        await ws.send_message(create("a", model="claude"))
        await ws.send_message(create("b", model="claude"))
        with trio.fail_after(10):
            await harness.fake.wait_requests(2)
    with trio.fail_after(5):
        for seen in harness.fake.seen:
            await seen.closed.wait()


async def test_shutdown_expiry_ends_a_running_request_with_server_shutdown() -> None:
    from trioproxy.record import Outcome
    from trioproxy.service import Runtime
    from trioproxy.upstream import HTTPClient

    fake = FakeUpstream(Reply(body=[HEAD, None]))  # the stream starts, then the upstream holds
    outcomes: list[Outcome | None] = []
    http = HTTPClient()
    async with trio.open_nursery() as nursery:
        upstream_url = await nursery.start(fake.serve)
        config = config_from(ws_ini(upstream_url))
        runtime = Runtime(config, http)
        runtime.on_finish.append(lambda record: outcomes.append(record.outcome))
        urls = await nursery.start(partial(serve, config, runtime=runtime))
        ws_url = urls[0].replace("http://", "ws://") + "/v1/ws"
        async with open_websocket_url(
            ws_url, subprotocols=["trioproxy.v1", "bearer.sk-ws-good"]
        ) as ws:
            await ws.send_message(create("held", model="claude"))
            first = await receive_json(ws)
            assert first["type"] == "chunk"
            runtime.lifecycle.expire()
            _, terminal = await until_terminal(ws, "held")
        with trio.fail_after(5):
            await fake.seen[0].closed.wait()  # and the upstream was let go
        nursery.cancel_scope.cancel()
    await http.aclose()
    collect_client_socket()
    assert terminal["type"] == "error"
    assert terminal["error"]["code"] == "server_shutdown"
    assert outcomes == [Outcome.SHUTDOWN]
