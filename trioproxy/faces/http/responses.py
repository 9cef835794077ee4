"""`POST /v1/responses`: the OpenAI Responses API, JSON or SSE (issue 19).

Stage: the HTTP face, one route. Auth -> read the body (size-limited) -> parse ->
`responses_request_to_chat` (the neutral chat body, or a 400 naming the field) ->
`validate_chat_request` -> the pump, with the client's own body as a `Passthrough` for upstreams
of type `openai-responses`.

Two kinds of answer, chosen per candidate upstream by the engine (translate/relay.py):
- pass-through (the routed upstream speaks the Responses API): the upstream's own events are
  written unchanged (`event: TYPE` + `data: DATA`), and a non-streaming answer is the upstream's
  body as it came;
- translated (Anthropic, OpenAI-compatible chat, demo): the neutral chat chunks go through
  `ChatToResponsesStream` (from_responses_stream.py), and a non-streaming `chat.completion`
  through `chat_completion_to_response`.

Invariants (docs/translation-responses-inbound.md, "For the face"):
- nothing is written before an upstream accepted (the pump's commitment rule); a failure before
  that is a real HTTP status with the OpenAI error envelope, `retry-after` included;
- after commitment, a failure ends the stream with `response.failed` + `error` (translated) or
  one `error` event (relayed: the upstream's `response` object is not ours to make up); no event
  follows it;
- during upstream silence, the SSE comment `: keep-alive` (the SDKs skip comments);
- stateless by design: `previous_response_id`, `store: true`, `background: true`, ... are 400
  `unsupported_parameter` from the translator, and every `/v1/responses/{id}` route (retrieve,
  delete, cancel, input items) is a 404 saying that no response is kept. Sources:
  https://platform.openai.com/docs/api-reference/responses (retrieve, delete, cancel,
  input_items) and https://platform.openai.com/docs/guides/conversation-state.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import TYPE_CHECKING, Any, NoReturn

from trioproxy import framing
from trioproxy.errors import ProxyError, UpstreamProtocolError
from trioproxy.faces.http.common import (
    ClientGone,
    NotFound,
    OneAnswerSink,
    Reply,
    authenticate,
    run_pump,
)
from trioproxy.record import Outcome
from trioproxy.translate.from_responses_request import responses_request_to_chat
from trioproxy.translate.from_responses_stream import (
    ChatToResponsesStream,
    ResponseMeta,
    chat_completion_to_response,
    error_event,
    sse_frame,
)
from trioproxy.translate.relay import Passthrough
from trioproxy.validate import parse_json_body, validate_chat_request

if TYPE_CHECKING:
    from trioproxy.faces.http.common import Exchange, Headers
    from trioproxy.record import RequestRecord
    from trioproxy.service import Service
    from trioproxy.sse import SSEEvent
    from trioproxy.translate.base import Chunk

__all__ = ["RESPONSES_PATH", "serve_responses", "stored_response"]

RESPONSES_PATH = "/v1/responses"
DIALECT = "openai-responses"  # the upstream type a Responses request passes through to


def new_response_id() -> str:
    # OpenAI's ids are `resp_` + 48 hex digits (e.g. the recorded
    # tests/data/protocol/openai_responses/nonstream_text.json); item ids derive from it.
    return "resp_" + secrets.token_hex(24)


async def serve_responses(
    service: Service, exchange: Exchange, reply: Reply, record: RequestRecord
) -> None:
    """Answer one Responses API request; finishes `record` (here or in the pump)."""
    try:
        key = authenticate(service, exchange.headers, record)
        raw = await exchange.read_body(service.config.proxy.max_body_bytes)
        original = parse_json_body(raw, max_depth=service.config.proxy.max_json_depth)
        request = responses_request_to_chat(original)
        body = validate_chat_request(request.chat, limits=service.limits)
    except ProxyError as exc:
        record.fail(exc)
        await reply.error(exc)
        service.finish(record)
        return
    except ClientGone:
        record.outcome = Outcome.CLIENT_CANCELLED
        service.finish(record)
        return
    assert isinstance(original, dict)  # responses_request_to_chat refuses anything else
    meta = ResponseMeta(
        response_id=new_response_id(),
        created_at=int(time.time()),
        model=body["model"],
        echo=request.echo,
    )
    passthrough = Passthrough(DIALECT, original, _text_headers(exchange.headers))
    sink: ResponsesSSESink | ResponsesJSONSink = (
        ResponsesSSESink(reply, meta) if request.stream else ResponsesJSONSink(reply, meta)
    )
    await run_pump(service, exchange, body, key, record, sink, passthrough=passthrough)


def _text_headers(headers: Headers) -> tuple[tuple[str, str], ...]:
    return tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in headers)


def stored_response(
    service: Service, headers: Headers, record: RequestRecord, path: str
) -> NoReturn:
    """Any request on `/v1/responses/{id}[/...]` (retrieve, delete, cancel, input_items): a 404
    that says why, after the key check every `/v1` route makes. trioproxy keeps no response."""
    authenticate(service, headers, record)
    response_id = path[len(RESPONSES_PATH) + 1 :].split("/", 1)[0]
    raise NotFound(
        f"No response with id '{response_id}' is stored here: trioproxy keeps no state between "
        "requests (stateless by design), so responses cannot be retrieved, cancelled, deleted or "
        "listed. Send the full conversation in `input` (previous messages, function_call and "
        "function_call_output items) with store: false, and read the answer from the response "
        "or its stream.",
        param="response_id",
        code="response_not_found",
    )


def relay_frame(event: SSEEvent) -> bytes:
    """An upstream event as it came: its `event:` name (if any) and its data, one `data:` line
    per line of it (WHATWG HTML 9.2.6: the decoder joined them with LF). `id:` and `retry:` are
    not carried: they are about the upstream connection, not ours."""
    head = b"" if event.event == "message" else b"event: " + event.event.encode() + b"\n"
    lines = b"".join(b"data: " + line.encode() + b"\n" for line in event.data.split("\n"))
    return head + lines + b"\n"


class ResponsesSSESink:
    """A Responses event stream: relayed events unchanged, or chat chunks translated."""

    def __init__(self, reply: Reply, meta: ResponseMeta) -> None:
        self._reply = reply
        self._exchange = reply.exchange
        self._translator = ChatToResponsesStream(meta)
        self._relayed = False
        self._last_relayed: SSEEvent | None = None

    async def commit(self) -> None:
        await self._reply.start_stream()

    async def send_events(self, events: list[SSEEvent]) -> None:
        self._relayed = True
        self._last_relayed = events[-1]
        await self._exchange.send(b"".join(relay_frame(event) for event in events))

    async def send_chunks(self, chunks: list[Chunk]) -> None:
        # A malformed chunk raises UpstreamProtocolError here; the pump then calls fail().
        events = self._translator.feed(chunks)
        if events:
            await self._exchange.send(b"".join(sse_frame(event) for event in events))

    async def keepalive(self) -> None:
        await self._exchange.send(framing.KEEPALIVE)

    async def finish(self) -> None:
        if not self._relayed:  # a relayed stream ended with the upstream's own terminal event
            try:
                events = self._translator.finish()
            except UpstreamProtocolError as exc:  # no finish_reason: never a clean end
                self._reply.record.fail(exc)
                events = self._translator.fail(exc)
            await self._exchange.send(b"".join(sse_frame(event) for event in events))
        await self._exchange.end()

    async def complete(self, completion: dict[str, Any]) -> None:  # pragma: no cover
        raise AssertionError("a streaming request has no complete answer")

    async def fail(self, error: ProxyError, *, committed: bool) -> None:
        if not committed:
            await self._reply.error(error)
            return
        if self._relayed:
            events = [error_event(error, _next_sequence_number(self._last_relayed))]
        else:
            events = self._translator.fail(error)
        if events:
            await self._exchange.send(b"".join(sse_frame(event) for event in events))
        await self._exchange.end()


def _next_sequence_number(event: SSEEvent | None) -> int:
    # The `error` event after a relayed stream continues the upstream's numbering
    # (https://platform.openai.com/docs/api-reference/responses-streaming: every event has one).
    if event is None:
        return 0
    try:
        payload = json.loads(event.data)
    except ValueError:
        return 0
    number = payload.get("sequence_number") if isinstance(payload, dict) else None
    if isinstance(number, int) and not isinstance(number, bool):
        return number + 1
    return 0


class ResponsesJSONSink(OneAnswerSink):
    """A non-streaming answer: one `response` object, or an error status."""

    def __init__(self, reply: Reply, meta: ResponseMeta) -> None:
        super().__init__(reply)
        self._meta = meta

    async def complete(self, completion: dict[str, Any]) -> None:
        if self._reply.record.relayed:  # the upstream's own `response` object, unchanged
            await self._reply.json(200, completion)
            return
        # Raises UpstreamProtocolError for an answer it cannot render: the pump calls `fail`.
        await self._reply.json(200, chat_completion_to_response(completion, self._meta))
