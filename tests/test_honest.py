"""Honest answers (issue 17): the engine's side of it, driven directly and through `serve`.

- `on_accept` is called once, when an upstream accepted (2xx event stream), before any chunk;
  never for a failure, so the face can hold its headers until then;
- bounded waits: a `retry-after` beyond the retry budget is not slept; the client gets the
  upstream's status with `retry-after` / `x-should-retry`; retries and give-ups are logged and
  counted with their reason;
- one request id: no upstream `x-request-id` / `request-id` among the error headers, the
  upstream's id in `RequestRecord.upstream_request_id` and in the access log;
- no fake success from an OpenAI-compatible upstream (`{}`, `{"error": ...}` with a 200);
- the model name every chunk and body reports, on every upstream type;
- access-log lines cannot be forged.

The tests at the end go through `trioproxy.serve` on 127.0.0.1:0 (the openai SDK, raw sockets)
and check the face side too: one `x-request-id`, `x-upstream-request-id`, no byte before the
status while retrying, keep-alive comments only after acceptance.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import h11
import openai
import pytest
import trio

import trioproxy
from tests.conftest import config_from
from tests.fakes import FakeUpstream, Reply, json_reply, sse_reply
from tests.support import PROTOCOL, assert_stream_contract, sse_payloads
from trioproxy.auth import ANONYMOUS
from trioproxy.engine import Engine
from trioproxy.errors import ProxyError
from trioproxy.logs import JSONFormatter, access_fields, log_access
from trioproxy.metrics import Metrics
from trioproxy.record import Outcome, RequestRecord, request_sample

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from trioproxy.translate.base import Chunk
    from trioproxy.upstream import HTTPClient

ANTHROPIC_STREAM = (PROTOCOL / "anthropic" / "stream_text.sse").read_bytes()
ANTHROPIC_BODY = json.loads((PROTOCOL / "anthropic" / "nonstream_text.json").read_text())
RESPONSES_STREAM = (PROTOCOL / "openai_responses" / "stream_text.sse").read_bytes()
RESPONSES_BODY = json.loads((PROTOCOL / "openai_responses" / "nonstream_text.json").read_text())
ANTHROPIC_MODEL = "claude-sonnet-4-5-20250929"  # what the Anthropic fixtures report
RESPONSES_MODEL = "gpt-4.1-mini-2025-04-14"  # what the Responses fixtures report
CHAT_MODEL = "gpt-4o-2024-08-06"  # what the chat fake below reports
HELLO = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
RATE_LIMITED = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def chat_stream(model: str = CHAT_MODEL) -> bytes:
    """A minimal OpenAI chat completion stream, as api.openai.com sends it."""
    base = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": model}
    events = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "Hello"}}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {
            **base,
            "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        },
    ]
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + (
        b"data: [DONE]\n\n"
    )


def chat_body(model: str = CHAT_MODEL) -> dict[str, Any]:
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def ini(
    *upstreams: tuple[str, str],
    upstream_model: str | None = "asked-model",
    keepalive: float = 15,
    max_retries: int = 2,
) -> str:
    """A config whose model `m` fails over across `upstreams` ((type, url) pairs)."""
    sections = [f"[proxy]\nlisten = 127.0.0.1:0\nkeepalive_interval = {keepalive}\n"]
    names = []
    for i, (kind, url) in enumerate(upstreams):
        names.append(f"up{i}")
        if kind == "demo":
            sections.append(f"[upstream:up{i}]\ntype = demo\ndemo_delay = 0\n")
            continue
        base = url if kind == "anthropic" else url + "/v1"
        sections.append(
            f"[upstream:up{i}]\ntype = {kind}\nbase_url = {base}\napi_key = sk-test-{i}\n"
            f"max_retries = {max_retries}\nretry_max_wait = 3\n"
        )
    model = f"[model:m]\nupstream = {', '.join(names)}\n"
    if upstream_model:
        model += f"upstream_model = {upstream_model}\n"
    sections.append(model)
    return "\n".join(sections)


def new_record() -> RequestRecord:
    return RequestRecord(request_id="req_proxy", started=trio.current_time())


async def stream(
    engine: Engine, body: dict[str, Any], record: RequestRecord
) -> tuple[list[Chunk], list[str]]:
    """Run one stream; return the chunks and the order of events ("accept", "emit")."""
    chunks: list[Chunk] = []
    order: list[str] = []

    async def emit(batch: list[Chunk]) -> None:
        order.append("emit")
        chunks.extend(batch)

    await engine.run_stream(
        {**body, "stream": True}, ANONYMOUS, record, emit, on_accept=lambda: order.append("accept")
    )
    return chunks, order


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


async def started(nursery: trio.Nursery, *fakes: FakeUpstream) -> list[str]:
    return [await nursery.start(fake.serve) for fake in fakes]


# --- on_accept --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["anthropic", "demo"])
async def test_on_accept_is_called_once_before_the_first_chunk(
    kind: str, nursery: trio.Nursery, http_client: HTTPClient
) -> None:
    fake = FakeUpstream(sse_reply(ANTHROPIC_STREAM, pieces=5))
    (url,) = await started(nursery, fake)
    engine = Engine(config_from(ini((kind, url))), http_client)
    chunks, order = await stream(engine, HELLO, new_record())
    assert order[0] == "accept"
    assert order.count("accept") == 1
    assert len(order) > 2 and chunks


async def test_on_accept_comes_after_the_retries_and_is_never_called_for_a_failure(
    nursery: trio.Nursery, http_client: HTTPClient
) -> None:
    failing = FakeUpstream(json_reply(529, OVERLOADED, [("retry-after-ms", "10")]))
    (url,) = await started(nursery, failing)
    engine = Engine(config_from(ini(("anthropic", url))), http_client)
    order: list[str] = []

    async def emit(batch: list[Chunk]) -> None:
        order.append("emit")

    with pytest.raises(ProxyError) as info:
        await engine.run_stream(
            {**HELLO, "stream": True},
            ANONYMOUS,
            new_record(),
            emit,
            on_accept=lambda: order.append("accept"),
        )
    assert info.value.status == 529
    assert order == []  # nothing accepted, nothing emitted: the face can answer 529
    assert len(failing.seen) == 3  # the first try and max_retries = 2


async def test_a_json_200_to_a_streaming_request_is_not_accepted(
    nursery: trio.Nursery, http_client: HTTPClient
) -> None:
    error = {"error": {"message": "boom", "type": "server_error", "code": None}}
    fake = FakeUpstream(json_reply(200, error))
    (url,) = await started(nursery, fake)
    engine = Engine(config_from(ini(("openai-chat", url))), http_client)
    with pytest.raises(ProxyError) as info:
        await stream(engine, HELLO, new_record())
    assert (info.value.status, info.value.message) == (502, "boom")


# --- bounded, visible waits -------------------------------------------------------------------


async def test_a_long_retry_after_is_not_slept_and_reaches_the_client(
    nursery: trio.Nursery, http_client: HTTPClient, caplog: pytest.LogCaptureFixture
) -> None:
    headers = [("retry-after", "23"), ("x-should-retry", "true"), ("request-id", "req_up_1")]
    first = FakeUpstream(json_reply(429, RATE_LIMITED, headers))
    second = FakeUpstream(json_reply(429, RATE_LIMITED, [*headers[:2], ("request-id", "req_up_2")]))
    urls = await started(nursery, first, second)
    engine = Engine(config_from(ini(*(("anthropic", u) for u in urls))), http_client)
    record = new_record()
    caplog.set_level(logging.INFO, logger="trioproxy")
    began = trio.current_time()
    with pytest.raises(ProxyError) as info:
        await engine.run_complete(HELLO, ANONYMOUS, record)
    assert trio.current_time() - began < 1.0  # 23 s is beyond the 3 s budget: not slept
    assert (len(first.seen), len(second.seen)) == (1, 1)  # the next candidate, at once
    exc = info.value
    assert exc.status == 429
    assert dict(exc.headers) == {"retry-after": "23", "x-should-retry": "true"}
    assert record.upstream_request_id == "req_up_2"  # the last upstream answer's id
    assert record.giveups == [("up0", "retry_after_too_long"), ("up1", "retry_after_too_long")]
    assert record.retries == 0
    giveups = [r.getMessage() for r in caplog.records if "giving up" in r.getMessage()]
    assert len(giveups) == 2
    assert "up0 (retry_after_too_long)" in giveups[0]
    assert "req_proxy" in giveups[0]


async def test_retries_and_giveups_are_counted_with_their_reason(
    nursery: trio.Nursery, http_client: HTTPClient, caplog: pytest.LogCaptureFixture
) -> None:
    overloaded = json_reply(529, OVERLOADED, [("retry-after-ms", "10")])
    down = FakeUpstream(overloaded)
    up = FakeUpstream(sse_reply(ANTHROPIC_STREAM))
    urls = await started(nursery, down, up)
    engine = Engine(config_from(ini(*(("anthropic", u) for u in urls))), http_client)
    record = new_record()
    caplog.set_level(logging.INFO, logger="trioproxy")
    await stream(engine, HELLO, record)
    assert record.retry_reasons == [("up0", "529"), ("up0", "529")]
    assert record.giveups == [("up0", "retries_exhausted")]
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2
    assert "retry 1 of upstream up0 in 0.01s (529)" in retries[0]

    record.ended, record.outcome, record.status = trio.current_time(), Outcome.COMPLETED, 200
    metrics = Metrics()
    metrics.observe_request(request_sample(record))
    text = metrics.render()
    assert 'trioproxy_upstream_retries_total{upstream="up0",reason="529"} 2' in text
    assert 'trioproxy_upstream_giveups_total{upstream="up0",reason="retries_exhausted"} 1' in text


async def test_x_should_retry_false_is_obeyed(
    nursery: trio.Nursery, http_client: HTTPClient
) -> None:
    fake = FakeUpstream(json_reply(529, OVERLOADED, [("x-should-retry", "false")]))
    (url,) = await started(nursery, fake)
    engine = Engine(config_from(ini(("anthropic", url))), http_client)
    record = new_record()
    with pytest.raises(ProxyError) as info:
        await engine.run_complete(HELLO, ANONYMOUS, record)
    assert info.value.status == 529
    assert len(fake.seen) == 1
    assert record.giveups == [("up0", "should_not_retry")]


# --- one request id ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "header"), [("anthropic", "request-id"), ("openai-chat", "x-request-id")]
)
async def test_the_upstream_request_id_is_recorded_and_never_an_error_header(
    kind: str, header: str, nursery: trio.Nursery, http_client: HTTPClient
) -> None:
    body = RATE_LIMITED if kind == "anthropic" else {"error": {"message": "slow down"}}
    fake = FakeUpstream(json_reply(400, body, [(header, "req_up_err")]))
    (url,) = await started(nursery, fake)
    engine = Engine(config_from(ini((kind, url))), http_client)
    record = new_record()
    with pytest.raises(ProxyError) as info:
        await engine.run_complete(HELLO, ANONYMOUS, record)
    assert not {"x-request-id", "request-id"} & {name for name, _ in info.value.headers}
    assert record.upstream_request_id == "req_up_err"


@pytest.mark.parametrize(
    ("kind", "header", "reply"),
    [
        ("anthropic", "request-id", sse_reply(ANTHROPIC_STREAM)),
        ("openai-responses", "x-request-id", sse_reply(RESPONSES_STREAM)),
        ("openai-chat", "x-request-id", sse_reply(chat_stream())),
    ],
)
async def test_the_upstream_request_id_of_a_success_is_recorded_and_logged(
    kind: str,
    header: str,
    reply: Reply,
    nursery: trio.Nursery,
    http_client: HTTPClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reply.headers = [*reply.headers, (header, "req_up_ok")]
    fake = FakeUpstream(reply)
    (url,) = await started(nursery, fake)
    engine = Engine(config_from(ini((kind, url))), http_client)
    record = new_record()
    await stream(engine, HELLO, record)
    assert record.upstream_request_id == "req_up_ok"
    record.ended, record.outcome, record.status = trio.current_time(), Outcome.COMPLETED, 200
    caplog.set_level(logging.INFO, logger="trioproxy.access")
    log_access(record)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "trioproxy.access"]
    assert "request_id=req_proxy upstream_request_id=req_up_ok " in line
    assert access_fields(record)["upstream_request_id"] == "req_up_ok"


async def test_an_upstream_request_id_that_is_not_a_token_is_dropped(
    nursery: trio.Nursery, http_client: HTTPClient
) -> None:
    reply = sse_reply(ANTHROPIC_STREAM)
    reply.headers = [*reply.headers, ("request-id", "a b" + "x" * 300)]
    fake = FakeUpstream(reply)
    (url,) = await started(nursery, fake)
    record = new_record()
    await stream(Engine(config_from(ini(("anthropic", url))), http_client), HELLO, record)
    assert record.upstream_request_id is None


# --- no fake success --------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [{}, {"id": "x", "object": "chat.completion"}, []])
async def test_a_200_without_choices_is_a_502_protocol_error(
    payload: Any, nursery: trio.Nursery, http_client: HTTPClient
) -> None:
    fake = FakeUpstream(json_reply(200, payload))
    (url,) = await started(nursery, fake)
    engine = Engine(config_from(ini(("openai-chat", url))), http_client)
    with pytest.raises(ProxyError) as info:
        await engine.run_complete(HELLO, ANONYMOUS, new_record())
    assert (info.value.status, info.value.code) == (502, "upstream_protocol_error")


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_200_carrying_an_error_is_the_upstreams_error_with_a_502(
    streaming: bool, nursery: trio.Nursery, http_client: HTTPClient
) -> None:
    error = {"error": {"message": "the model crashed", "type": "server_error", "code": "oops"}}
    fake = FakeUpstream(json_reply(200, error))
    (url,) = await started(nursery, fake)
    engine = Engine(config_from(ini(("openai-chat", url))), http_client)
    run = (
        partial(stream, engine, HELLO)
        if streaming
        else partial(engine.run_complete, HELLO, ANONYMOUS)
    )
    with pytest.raises(ProxyError) as info:
        await run(new_record())
    exc = info.value
    assert (exc.status, exc.message, exc.error_type, exc.code) == (
        502,
        "the model crashed",
        "server_error",
        "oops",
    )


async def test_a_200_stream_of_another_content_type_is_a_protocol_error(
    nursery: trio.Nursery, http_client: HTTPClient
) -> None:
    fake = FakeUpstream(Reply(headers=[("content-type", "text/html")], body=[b"<html>"]))
    (url,) = await started(nursery, fake)
    engine = Engine(config_from(ini(("openai-chat", url), max_retries=0)), http_client)
    with pytest.raises(ProxyError) as info:
        await stream(engine, HELLO, new_record())
    assert (info.value.status, info.value.code) == (502, "upstream_protocol_error")


# --- the model name ---------------------------------------------------------------------------

# The rule (docs/streaming.md "The model name"): the model that answered, as the upstream
# names it; the upstream model trioproxy asked for when the upstream names none.
MODEL_CASES = [
    ("anthropic", sse_reply(ANTHROPIC_STREAM), json_reply(200, ANTHROPIC_BODY), ANTHROPIC_MODEL),
    (
        "openai-responses",
        sse_reply(RESPONSES_STREAM),
        json_reply(200, RESPONSES_BODY),
        RESPONSES_MODEL,
    ),
    ("openai-chat", sse_reply(chat_stream()), json_reply(200, chat_body()), CHAT_MODEL),
    ("demo", None, None, "asked-model"),
]


@pytest.mark.parametrize(
    ("kind", "stream_reply", "body_reply", "reported"),
    MODEL_CASES,
    ids=[case[0] for case in MODEL_CASES],
)
async def test_every_upstream_reports_the_model_that_answered(
    kind: str,
    stream_reply: Reply | None,
    body_reply: Reply | None,
    reported: str,
    nursery: trio.Nursery,
    http_client: HTTPClient,
) -> None:
    fake = FakeUpstream(*(r for r in (stream_reply, body_reply) if r is not None))
    (url,) = await started(nursery, fake)
    engine = Engine(config_from(ini((kind, url))), http_client)
    chunks, _ = await stream(engine, HELLO, new_record())
    assert {c["model"] for c in chunks} == {reported}
    completion = await engine.run_complete(HELLO, ANONYMOUS, new_record())
    assert completion["model"] == reported


@pytest.mark.parametrize("kind", ["openai-chat", "demo"])
async def test_without_upstream_model_and_an_upstream_that_names_none_the_sent_name_is_reported(
    kind: str, nursery: trio.Nursery, http_client: HTTPClient
) -> None:
    nameless = chat_body()
    del nameless["model"]
    fake = FakeUpstream(json_reply(200, nameless))
    (url,) = await started(nursery, fake)
    engine = Engine(config_from(ini((kind, url), upstream_model=None)), http_client)
    completion = await engine.run_complete(HELLO, ANONYMOUS, new_record())
    assert completion["model"] == "m"


# --- log lines cannot be forged ---------------------------------------------------------------

FORGED = "demo\n2030-01-01 00:00:00,000 INFO trioproxy.access: request_id=forged status=200"


def test_a_model_name_with_a_line_feed_cannot_forge_an_access_line() -> None:
    record = RequestRecord(
        request_id="req\r\nx", started=0.0, model=FORGED, key_name="k\x1b[31m\u2028\x85"
    )
    record.ended, record.outcome, record.status = 1.0, Outcome.REJECTED, 404
    handler_records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handler_records.append(record)

    logger = logging.getLogger("trioproxy.access")
    keep, old_level = Keep(), logger.level
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    try:
        log_access(record)
    finally:
        logger.removeHandler(keep)
        logger.setLevel(old_level)
    (entry,) = handler_records
    text = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s").format(entry)
    assert len(text.splitlines()) == 1  # splitlines also splits on \x85 and \u2028
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)
    assert 'model="demo\\n2030-01-01 00:00:00,000 INFO trioproxy.access: ' in text
    assert "request_id=req\\r\\nx " in text
    assert "key=k\\x1b[31m\\u2028\\x85 " in text
    as_json = JSONFormatter().format(entry)
    assert len(as_json.splitlines()) == 1
    assert json.loads(as_json)["model"] == FORGED


# --- through serve: the faces, the SDK, raw sockets -------------------------------------------


@pytest.fixture
async def proxy(nursery: trio.Nursery) -> Any:
    """Start trioproxy.serve for a config text; yields a function returning the base URL."""

    async def start(text: str) -> str:
        urls = await nursery.start(partial(trioproxy.serve, config_from(text)))
        return str(urls[0])

    return start


@dataclass
class RawResponse:
    first_bytes: bytes  # the first piece read from the socket: nothing may come before the head
    status: int
    headers: list[tuple[str, str]]  # in order, duplicates kept
    body: bytes  # de-chunked

    def count(self, name: str) -> int:
        return [key for key, _ in self.headers].count(name)

    def header(self, name: str) -> str:
        (value,) = [v for key, v in self.headers if key == name]
        return value


async def raw_exchange(base: str, body: dict[str, Any]) -> RawResponse:
    """POST /v1/chat/completions on a raw socket, read with h11 until the response ends."""
    host, port = base.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="POST",
        target="/v1/chat/completions",
        headers=[
            ("host", host),
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
        ],
    )
    stream = await trio.open_tcp_stream(host, int(port))
    first = b""
    status, headers, out = 0, [], bytearray()
    async with stream:
        await stream.send_all(conn.send(request) + conn.send(h11.Data(data=payload)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        with trio.fail_after(10):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    piece = await stream.receive_some(65536)
                    first = first or piece
                    conn.receive_data(piece)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    headers = [(k.decode(), v.decode()) for k, v in event.headers]
                elif isinstance(event, h11.Data):
                    out += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
    return RawResponse(first, status, headers, bytes(out))


@pytest.mark.parametrize(("status", "payload"), [(429, RATE_LIMITED), (529, OVERLOADED)])
async def test_a_stream_failing_before_its_first_event_gets_that_status_and_no_byte_before(
    status: int, payload: dict[str, Any], nursery: trio.Nursery, proxy: Any
) -> None:
    # Three tries 0.3 s apart with a 0.1 s keep-alive interval: a face that sent keep-alive
    # before acceptance would commit a 200 long before the upstream's last answer.
    fake = FakeUpstream(json_reply(status, payload, [("retry-after-ms", "300")]))
    (url,) = await started(nursery, fake)
    base = await proxy(ini(("anthropic", url), keepalive=0.1))
    resp = await raw_exchange(base, {**HELLO, "stream": True})
    assert resp.first_bytes.startswith(f"HTTP/1.1 {status} ".encode()), resp.first_bytes[:200]
    assert resp.status == status
    assert b"keep-alive" not in resp.body
    assert json.loads(resp.body)["error"]["message"] in ("slow down", "Overloaded")
    assert len(fake.seen) == 3
    assert resp.count("x-request-id") == 1


async def test_a_529_then_success_is_a_normal_200_stream(nursery: trio.Nursery, proxy: Any) -> None:
    fake = FakeUpstream(
        json_reply(529, OVERLOADED, [("retry-after-ms", "200")]), sse_reply(ANTHROPIC_STREAM)
    )
    (url,) = await started(nursery, fake)
    base = await proxy(ini(("anthropic", url), keepalive=0.05))
    resp = await raw_exchange(base, {**HELLO, "stream": True})
    assert resp.status == 200
    assert not resp.body.startswith(b":")  # no keep-alive while the upstream had not accepted
    assert_stream_contract(sse_payloads(resp.body), include_usage=False)


async def test_an_upstream_that_accepted_and_thinks_gets_keepalives_then_content(
    nursery: trio.Nursery, proxy: Any
) -> None:
    fake = FakeUpstream(Reply(body=[0.5, ANTHROPIC_STREAM]))  # head at once, then silence
    (url,) = await started(nursery, fake)
    base = await proxy(ini(("anthropic", url), keepalive=0.1))
    resp = await raw_exchange(base, {**HELLO, "stream": True})
    assert resp.status == 200
    assert resp.body.startswith(b": keep-alive\n\n")
    assert resp.body.count(b": keep-alive") >= 2
    assert_stream_contract(sse_payloads(resp.body), include_usage=False)


def sdk(base: str, max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=max_retries)


async def test_sdk_sees_the_upstreams_429_at_once_with_one_request_id(
    nursery: trio.Nursery, proxy: Any
) -> None:
    fake = FakeUpstream(
        json_reply(429, RATE_LIMITED, [("retry-after", "23"), ("request-id", "req_up_429")])
    )
    (url,) = await started(nursery, fake)
    base = await proxy(ini(("anthropic", url)))

    def call() -> openai.RateLimitError:
        with sdk(base) as client:
            try:
                client.chat.completions.create(**HELLO)  # type: ignore[call-overload]
            except openai.RateLimitError as exc:
                return exc
        raise AssertionError("no RateLimitError")

    began = trio.current_time()
    exc = await trio.to_thread.run_sync(call)
    assert trio.current_time() - began < 2.0
    assert exc.status_code == 429
    assert exc.response.headers["retry-after"] == "23"
    assert exc.request_id is not None and "," not in exc.request_id  # one id, the proxy's
    assert exc.request_id != "req_up_429"
    assert exc.response.headers["x-upstream-request-id"] == "req_up_429"


async def test_sdk_retries_a_429_with_a_short_retry_after_itself(
    nursery: trio.Nursery, proxy: Any
) -> None:
    limited = json_reply(429, RATE_LIMITED, [("retry-after", "1"), ("request-id", "req_a")])
    ok = json_reply(200, ANTHROPIC_BODY, [("request-id", "req_b")])
    fake = FakeUpstream(limited, ok)
    (url,) = await started(nursery, fake)
    # max_retries = 0: the proxy gives the 429 back at once, the SDK waits and retries.
    base = await proxy(ini(("anthropic", url), max_retries=0))

    def call() -> Any:
        with sdk(base, max_retries=2) as client:
            return client.chat.completions.with_raw_response.create(**HELLO)  # type: ignore[call-overload]

    raw = await trio.to_thread.run_sync(call)
    completion = raw.parse()
    assert len(fake.seen) == 2
    assert completion.model == ANTHROPIC_MODEL
    assert completion._request_id == raw.headers["x-request-id"]
    assert "," not in completion._request_id
    assert raw.headers["x-upstream-request-id"] == "req_b"


async def test_every_response_has_exactly_one_x_request_id(
    nursery: trio.Nursery, proxy: Any
) -> None:
    fake = FakeUpstream(
        json_reply(200, ANTHROPIC_BODY, [("request-id", "req_up")]),
        json_reply(
            500,
            {"type": "error", "error": {"type": "api_error", "message": "x"}},
            [("request-id", "req_up_500"), ("x-should-retry", "false")],
        ),
    )
    (url,) = await started(nursery, fake)
    base = await proxy(ini(("anthropic", url)))
    for expected, upstream_id in ((200, "req_up"), (500, "req_up_500")):
        resp = await raw_exchange(base, HELLO)
        assert resp.status == expected
        assert resp.count("x-request-id") == 1, resp.headers
        assert resp.header("x-upstream-request-id") == upstream_id
