"""Hostile and careless HTTP clients against `trioproxy.serve`, black-box (issue 16).

Raw sockets write the requests by hand (HTTP/1.0, `Connection: close`, pipelining, dribbled heads
and bodies, framing conflicts, malformed heads, hand-made WebSocket frames, an HTTP/2 preface);
h11 parses what comes back. Every read is bounded, so a server that hangs fails with a message
instead of hanging the suite. The rules are RFC 9112 (HTTP/1.1 message syntax), RFC 9110
(semantics: Expect), RFC 6455 (WebSocket) and DESIGN.md "The edge".
"""

from __future__ import annotations

import json
import time
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio

import trioproxy
from tests.lifecycle_support import (
    Received,
    chat_body,
    chat_request,
    connect,
    error_codes,
    exchange,
    parse_responses,
    read_until,
    read_until_eof,
    sse_events,
    ws_close_code,
    ws_frame,
    ws_handshake,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

KEY = "sk-edge-good"
MAX_BODY = 65536

EDGE_INI = """
[proxy]
listen = 127.0.0.1:0
api_keys = {key}
max_body_bytes = {max_body}
{extra}

[upstream:demo]
type = demo
demo_delay = 0.001

[model:demo]
upstream = demo
"""

# The servers of `[proxy] server`: our HTTP/1.1 server on h11 (the default) and hypercorn.
SERVERS = ["native", "hypercorn"]


@asynccontextmanager
async def serving(extra: str = "") -> AsyncIterator[int]:
    """`trioproxy.serve` on 127.0.0.1:0 with `extra` lines in [proxy]; yields the port."""
    text = EDGE_INI.format(key=KEY, max_body=MAX_BODY, extra=extra)
    config = trioproxy.parse_config(text, {})
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(trioproxy.serve, config))
        yield int(urls[0].rsplit(":", 1)[1])
        nursery.cancel_scope.cancel()


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async with serving() as bound:
        yield bound


def health(extra: str = "") -> bytes:
    return f"GET /health HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


async def served_meanwhile(port: int, until: trio.Event, answered: list[float]) -> None:
    """Other clients: a /health request every 0.2 s until `until`, noting how long each took."""
    while not until.is_set():
        started = time.monotonic()
        got = await exchange(port, health("Connection: close\r\n"), 2)
        responses = parse_responses(got.data, eof=got.closed)
        answered.append(
            time.monotonic() - started if responses and responses[0].status == 200 else -1
        )
        await trio.sleep(0.2)


# --- the server's FIN after the response ---------------------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("close_by", ["http/1.0", "connection: close"])
@pytest.mark.parametrize("stream", [True, False], ids=["sse", "json"])
async def test_the_server_closes_the_connection_right_after_the_response(
    server: str, close_by: str, stream: bool
) -> None:
    # RFC 9112 §9.6: a server that sends `close` (or answers an HTTP/1.0 request without
    # keep-alive) closes the connection after the response. `curl --http1.0 -N` and nginx's
    # default `proxy_http_version 1.0` wait for that FIN; an SSE answer to HTTP/1.0 can only be
    # delimited by it (no chunked coding in 1.0, RFC 9112 §6.1).
    version, extra = ("1.0", "") if close_by == "http/1.0" else ("1.1", "Connection: close\r\n")
    request = chat_request(chat_body(stream=stream), version=version, key=KEY, extra=extra)
    end = b"data: [DONE]" if stream else b'"finish_reason"'
    async with serving(f"server = {server}") as port:
        for attempt in range(2):
            client = await connect(port)
            async with client:
                await client.send_all(request)
                got = await read_until(client, end, 10)
                assert end in got.data, (
                    f"attempt {attempt}: no complete answer: {got.data[-300:]!r}"
                )
                await read_until_eof(client, 1, into=got)
            assert got.closed, f"attempt {attempt}: no FIN within 1 s of the answer ({close_by})"
            (response,) = parse_responses(got.data, eof=True)
            assert response.status == 200 and response.complete
            if version == "1.0":
                assert "chunked" not in response.headers.get("transfer-encoding", "")
            if stream:
                events = sse_events(response.body)
                assert events[-1] == "[DONE]" and not error_codes(events)
            else:
                assert json.loads(response.body)["choices"][0]["finish_reason"] == "stop"


# --- slowloris -----------------------------------------------------------------------------------


async def cut_off_after(
    stream: trio.SocketStream, send_more: bytes, interval: float, got: Received
) -> float | None:
    """Send one byte of `send_more` every `interval` s (then nothing) while reading; the seconds
    until the server closed the connection, or None if it had not after 6 s."""
    started = time.monotonic()
    async with trio.open_nursery() as nursery:

        async def dribble() -> None:
            try:
                for i in range(len(send_more)):
                    await trio.sleep(interval)
                    await stream.send_all(send_more[i : i + 1])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            await trio.sleep_forever()

        nursery.start_soon(dribble)
        await read_until_eof(stream, 6, into=got)
        nursery.cancel_scope.cancel()
    return time.monotonic() - started if got.closed else None


@pytest.mark.parametrize("phase", ["head", "body"])
async def test_a_client_dribbling_its_request_is_cut_off_at_the_deadline_while_others_are_served(
    phase: str,
) -> None:
    # head_timeout bounds the whole head; body_timeout the silence inside a body. This client
    # trickles its head one byte at a time (never silent long), or sends part of its body and
    # then falls silent: either way it is cut off about 1 s in, with a 408 or a bare close.
    body = chat_body(stream=False)
    if phase == "head":
        head = chat_request(body, key=KEY)
        first, trickle, interval = head[:20], head[20:], 0.1
    else:
        full = chat_request(body, key=KEY)
        first, trickle, interval = full[: len(full) - len(body) // 2], b"", 0.1
    async with serving("head_timeout = 1\nbody_timeout = 1") as port:
        answered: list[float] = []
        done = trio.Event()
        client = await connect(port)
        async with client, trio.open_nursery() as nursery:
            nursery.start_soon(served_meanwhile, port, done, answered)
            await client.send_all(first)
            got = Received()
            cut_after = await cut_off_after(client, trickle, interval, got)
            done.set()
    assert cut_after is not None, f"a client dribbling its {phase} was still connected after 6 s"
    assert 0.8 <= cut_after <= 2.5, f"cut off after {cut_after:.1f} s, not at the 1 s deadline"
    assert got.data == b"" or got.data.startswith(b"HTTP/1.1 4"), got.data[:200]
    assert answered and all(0 <= took < 1 for took in answered), f"others meanwhile: {answered}"


# --- framing and Expect --------------------------------------------------------------------------


async def test_content_length_with_transfer_encoding_gets_400_and_the_connection_closed(
    port: int,
) -> None:
    # RFC 9112 §6.1: a request with both may be an attempt at request smuggling; "the server MUST
    # close the connection after responding to such a request".
    body = b'{"model":"demo","messages":[]}'
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n".encode()
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + chunked
    )
    got = await exchange(port, request, 3)
    responses = parse_responses(got.data, eof=got.closed)
    assert responses, f"no response: {got}"
    assert responses[0].status == 400, responses[0]
    assert "error" in json.loads(responses[0].body)
    assert got.closed, "the connection stayed open after the 400"
    assert len(responses) == 1


async def test_expect_100_continue_is_answered_once_the_key_and_size_are_accepted(
    port: int,
) -> None:
    body = chat_body(stream=False)
    request = chat_request(body, key=KEY, extra="Expect: 100-continue\r\n")
    head = request[: len(request) - len(body)]
    client = await connect(port)
    async with client:
        await client.send_all(head)
        interim = await read_until(client, b"\r\n\r\n", 3)
        assert interim.data.startswith(b"HTTP/1.1 100"), f"no 100 Continue: {interim.data[:200]!r}"
        await client.send_all(body)
        got = await read_until(client, b'"finish_reason"', 5)
    responses = parse_responses(got.data, eof=False)
    assert [r.status for r in responses] == [200], got.data[:300]


@pytest.mark.parametrize(
    ("key", "length", "status"),
    [("sk-edge-wrong", 200, 401), (KEY, MAX_BODY + 1, 413)],
    ids=["wrong-key", "too-large"],
)
async def test_expect_100_continue_refused_by_key_or_size_gets_the_error_and_no_100(
    port: int, key: str, length: int, status: int
) -> None:
    # RFC 9110 §10.1.1: a server that will refuse the request answers with the final status
    # instead of 100, so the client never sends a body the proxy would throw away.
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Length: {length}\r\n".encode()
        + b"Expect: 100-continue\r\n\r\n"
    )
    client = await connect(port)
    async with client:
        await client.send_all(head)
        got = await read_until(client, b"\r\n\r\n", 3)
    first_line = got.data.split(b"\r\n", 1)[0]
    assert first_line.startswith(f"HTTP/1.1 {status}".encode()), (
        f"expected {status} before any body was sent, got {first_line!r}"
    )


async def test_pipelined_requests_are_answered_in_order_or_refused_with_a_clean_close(
    port: int,
) -> None:
    # RFC 9112 §9.3.2: a server may process pipelined requests in parallel but must answer them
    # in the order received; refusing the rest is allowed only as a close after full answers.
    body = chat_body("second in line", stream=False)
    requests = (
        health()
        + chat_request(body, key=KEY)
        + f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n".encode()
        + b"Connection: close\r\n\r\n"
    )
    got = await exchange(port, requests, 5)
    assert got.closed, "no close after the last pipelined request (it asked for one)"
    assert not got.reset, "refused with a reset, not a clean close"
    responses = parse_responses(got.data, eof=True)
    assert responses, f"nothing answered: {got.data[:200]!r}"
    assert all(r.complete for r in responses)
    checks: list[Any] = [
        lambda r: r.status == 200 and json.loads(r.body)["status"] == "ok",
        lambda r: (
            "You said: second in line" in json.loads(r.body)["choices"][0]["message"]["content"]
        ),
        lambda r: r.status == 200 and json.loads(r.body)["object"] == "list",
    ]
    for i, (response, check) in enumerate(zip(responses, checks, strict=False)):
        assert check(response), f"pipelined response {i} out of order or wrong: {response}"


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", id="tls-hello"
        ),
        pytest.param(b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", id="bad-request-line"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", id="header-no-colon"),
        pytest.param(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", id="space-before-colon"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", id="nul-in-value"),
        pytest.param(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n",
            id="content-length-not-a-number",
        ),
        pytest.param(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Content-Length: 4\r\n\r\nabcd",
            id="two-content-lengths",
        ),
        pytest.param(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"\r\nzz\r\nabc\r\n0\r\n\r\n",
            id="bad-chunk-size",
        ),
    ],
)
async def test_a_malformed_request_gets_a_4xx_and_a_close(port: int, request_bytes: bytes) -> None:
    got = await exchange(port, request_bytes, 3)
    assert got.closed, f"the connection stayed open after a malformed request: {got.data[:200]!r}"
    responses = parse_responses(got.data, eof=True)
    assert responses, f"closed without a response: {got.data[:200]!r}"
    assert 400 <= responses[0].status < 500, responses[0]
    # the server still serves a well-formed request afterwards
    after = await exchange(port, health("Connection: close\r\n"), 3)
    assert after.data.startswith(b"HTTP/1.1 200")


# --- WebSocket protocol errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        # RFC 6455 §5.1: "a server MUST close the connection upon receiving a frame that is not
        # masked ... with a status code of 1002 (protocol error)".
        pytest.param(ws_frame(0x1, b'{"type":"cancel","id":"x"}', mask=None), 1002, id="unmasked"),
        # §5.2: an opcode reserved for future use fails the connection (1002).
        pytest.param(ws_frame(0x3, b"x"), 1002, id="reserved-opcode"),
        # §8.1: a text frame that is not valid UTF-8 fails the connection with 1007.
        pytest.param(ws_frame(0x1, b'{"id": "\xff\xfe"}'), 1007, id="invalid-utf8"),
    ],
)
async def test_a_websocket_protocol_error_closes_with_its_code_not_a_bare_eof(
    port: int, frame: bytes, code: int
) -> None:
    stream, got = await ws_handshake(port, key=KEY)
    async with stream:
        await stream.send_all(frame)
        await read_until_eof(stream, 3, into=got)
    assert ws_close_code(got.data) == code, (
        f"expected a close frame with {code}; got {got.data[:100]!r} closed={got.closed}"
    )
    assert got.closed, "the server did not close the connection after its close frame"


# --- HTTP/2 --------------------------------------------------------------------------------------

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 §3.4
H2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS frame (§6.5)


async def test_an_http2_preface_to_the_default_server_gets_an_error_and_a_close(port: int) -> None:
    # HTTP/2 only on `server = hypercorn` (with TLS); the default server speaks HTTP/1.1 and must
    # not turn into an unbounded h2c connection.
    got = await exchange(port, H2_PREFACE + H2_SETTINGS, 3)
    assert got.closed, f"the connection stayed open after an HTTP/2 preface: {got.data[:60]!r}"
    if got.data:  # a bare close will do; an answer is an HTTP/1.1 error (400, or 505: RFC 9110
        # §15.6.6 "HTTP Version Not Supported"), never an h2 SETTINGS frame
        responses = parse_responses(got.data, eof=True)
        assert responses, f"not an HTTP/1.1 answer (an h2 frame?): {got.data[:60]!r}"
        assert 400 <= responses[0].status < 500 or responses[0].status == 505, responses[0]


async def test_an_h2c_upgrade_request_is_answered_over_http11(port: int) -> None:
    # RFC 9113 §3.1 retired h2c upgrades; RFC 9110 §7.8 lets a server ignore Upgrade.
    request = health(
        "Connection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\n"
        "HTTP2-Settings: AAMAAABkAAQAAP__\r\n"
    )
    got = await exchange(port, request, 3)
    responses = parse_responses(got.data, eof=got.closed)
    assert responses, f"no HTTP/1.1 answer: {got.data[:100]!r}"
    assert responses[0].status == 200, f"switched protocols or refused: {responses[0]}"
