"""The real server: hypercorn on 127.0.0.1:0 under `trioproxy.serve`, driven by real clients
(the official openai SDK in a worker thread, raw sockets for hostile input)."""

from __future__ import annotations

import json
import socket
from functools import partial
from typing import TYPE_CHECKING, Any

import openai
import pytest
import trio

from tests.conftest import DEMO_INI, config_from
from trioproxy.server import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture
async def demo_url() -> AsyncIterator[str]:
    config = config_from(DEMO_INI.replace("demo_delay = 0", "demo_delay = 0.001"))
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, config))
        yield urls[0]
        nursery.cancel_scope.cancel()


def _sdk(url: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw
    )


async def test_openai_sdk_streams_and_completes_through_the_daemon(demo_url: str) -> None:
    def run() -> tuple[list[Any], Any, Any]:
        with _sdk(demo_url) as client:
            chunks = list(
                client.chat.completions.create(
                    model="demo",
                    messages=HELLO,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            full = client.chat.completions.create(model="demo", messages=HELLO)
            with client.chat.completions.stream(model="demo", messages=HELLO) as stream:
                final = stream.get_final_completion()
            return chunks, full, final

    chunks, full, final = await trio.to_thread.run_sync(run)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("You said: hello there")
    assert chunks[-1].usage.total_tokens > 0
    assert full.choices[0].message.content == text
    assert final.choices[0].message.content == text
    assert final.choices[0].message.role == "assistant"


async def test_openai_sdk_sees_status_errors(demo_url: str) -> None:
    def run() -> Exception:
        with _sdk(demo_url) as client:
            try:
                client.chat.completions.create(model="no-such-model", messages=HELLO)
            except openai.NotFoundError as exc:
                return exc
        raise AssertionError("expected NotFoundError")

    exc = await trio.to_thread.run_sync(run)
    assert exc.status_code == 404  # type: ignore[attr-defined]
    assert exc.code == "model_not_found"  # type: ignore[attr-defined]


def _raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


async def test_malformed_websocket_upgrade_costs_one_connection_not_the_daemon(
    demo_url: str,
) -> None:
    # hypercorn#225: stray bytes after an upgrade request's headers crashed the whole server.
    port = int(demo_url.rsplit(":", 1)[1])
    upgrade = (
        b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bKdPyn3u98cTfZJSh4TNeQ==\r\n"
        b"Sec-WebSocket-Protocol: trioproxy.v1\r\n\r\nx\n"
    )
    await trio.to_thread.run_sync(_raw_exchange, port, upgrade)
    health = await trio.to_thread.run_sync(
        _raw_exchange, port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert health.startswith(b"HTTP/1.1 200")


async def test_garbage_request_line_gets_400_and_the_daemon_keeps_serving(demo_url: str) -> None:
    port = int(demo_url.rsplit(":", 1)[1])
    reply = await trio.to_thread.run_sync(_raw_exchange, port, b"\x16\x03\x01 garbage\r\n\r\n")
    assert reply == b"" or reply.startswith(b"HTTP/1.1 400")
    health = await trio.to_thread.run_sync(
        _raw_exchange, port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert health.startswith(b"HTTP/1.1 200")


async def test_a_client_that_stops_reading_is_cancelled_after_the_write_deadline() -> None:
    from trioproxy.asgi import ProxyApp
    from trioproxy.proxy import Outcome
    from trioproxy.upstream import HTTPClient

    ini = DEMO_INI.replace("[proxy]", "[proxy]\nwrite_timeout = 0.5")
    config = config_from(ini)
    ended = trio.Event()
    outcomes = []
    http = HTTPClient()
    try:
        app = ProxyApp(config, http)

        def on_finish(record: object) -> None:
            if record.model == "demo":  # type: ignore[attr-defined]
                outcomes.append(record.outcome)  # type: ignore[attr-defined]
                ended.set()

        app.on_finish.append(on_finish)
        async with trio.open_nursery() as nursery:
            url = (await nursery.start(partial(serve, config, app=app)))[0]
            port = int(url.rsplit(":", 1)[1])
            # "You said: x x x ..." streams one chunk per word: tens of MB, more than the socket
            # buffers hold, to a client that never reads.
            body = json.dumps(
                {
                    "model": "demo",
                    "stream": True,
                    "messages": [{"role": "user", "content": "x " * 300_000}],
                }
            ).encode()
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                with trio.fail_after(30):
                    await ended.wait()
                health = await trio.to_thread.run_sync(
                    _raw_exchange,
                    port,
                    b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                )
            nursery.cancel_scope.cancel()
    finally:
        await http.aclose()
    assert outcomes == [Outcome.CLIENT_CANCELLED]
    assert health.startswith(b"HTTP/1.1 200")


async def test_oversized_request_headers_are_refused_and_the_daemon_keeps_serving(
    demo_url: str,
) -> None:
    port = int(demo_url.rsplit(":", 1)[1])
    huge = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    reply = await trio.to_thread.run_sync(_raw_exchange, port, huge)
    assert reply.startswith(b"HTTP/1.1 431")
    health = await trio.to_thread.run_sync(
        _raw_exchange, port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert health.startswith(b"HTTP/1.1 200")
