"""`POST /v1/messages` and `POST /v1/messages/count_tokens`: Anthropic's Messages API.

Stage: the HTTP face, two routes, for Claude Code and the anthropic SDKs
(docs/anthropic-clients.md). Auth (`x-api-key` or `Authorization: Bearer`) -> read the body ->
plan -> the pump, with a sink that answers in Anthropic's shapes.

Two ways through, chosen per upstream candidate by the engine (translate/relay.py):
- **pass-through**, when the model's upstream is an Anthropic one: the client's body goes up
  unchanged but for `model` (and the model's configured defaults), with its `anthropic-version`
  and `anthropic-beta` headers; the upstream's events come back to `send_events` and are written
  as they came (`event:` name and `data:` JSON unchanged), its JSON answer unchanged;
- **translation** for every other upstream: `chat_request_from_anthropic` makes the neutral chat
  request, the engine's chunks are turned into Anthropic events (`AnthropicStreamTranslator`) or
  its `chat.completion` into a `message` (`message_from_chat_completion`).

When every candidate of the model is an Anthropic upstream, the request is not translated at all
(nothing would use the translation, and it would refuse Anthropic-only fields such as `top_k`,
server tools or `context_management`): only what the pump needs is checked (`model`, `stream`,
`messages` an array, the `[proxy]` message and tool counts), and Anthropic judges the rest; its
400 comes back in its envelope. When any candidate is another upstream, the whole request must
translate, and a field that cannot is a 400 naming it (docs/translation-anthropic-inbound.md).

Invariants: every answer of these routes, success or error, carries exactly one `request-id`
(the proxy's id, the header the anthropic SDKs read; `x-request-id` has the same value); every
error is in Anthropic's envelope `{"type": "error", "error": {"type", "message"}, "request_id"}`
with Anthropic's status (`anthropic_error`): before the stream started a real status (529
`overloaded_error` stays 529), after it one `error` event, and the stream ends. During upstream
silence the keep-alive is Anthropic's own `ping` event.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from trioproxy.errors import ClientError, ProxyError
from trioproxy.faces.http.common import ClientGone, OneAnswerSink, authenticate, run_pump
from trioproxy.record import Outcome
from trioproxy.translate.from_anthropic_count import estimate_input_tokens
from trioproxy.translate.from_anthropic_request import chat_request_from_anthropic
from trioproxy.translate.from_anthropic_response import (
    anthropic_error,
    message_from_chat_completion,
)
from trioproxy.translate.from_anthropic_stream import (
    AnthropicStreamTranslator,
    encode_event,
    error_event,
    ping_event,
)
from trioproxy.translate.relay import Passthrough
from trioproxy.validate import parse_json_body, validate_chat_request

if TYPE_CHECKING:
    from trioproxy.config_types import ClientKey
    from trioproxy.faces.http.common import Exchange, Headers, Reply
    from trioproxy.record import RequestRecord
    from trioproxy.service import Service
    from trioproxy.sse import SSEEvent
    from trioproxy.translate.base import Chunk

__all__ = ["TOKEN_COUNT_HEADER", "frame_event", "serve_count_tokens", "serve_messages"]

# Says where a count_tokens answer came from: `upstream` (Anthropic counted it) or `estimate`
# (translate/from_anthropic_count.py; docs/anthropic-clients.md, "count_tokens").
TOKEN_COUNT_HEADER = b"x-trioproxy-token-count"


# --- POST /v1/messages ------------------------------------------------------------------------


async def serve_messages(
    service: Service, exchange: Exchange, reply: Reply, record: RequestRecord
) -> None:
    """Answer one Messages request; finishes `record` (here or in the pump)."""
    try:
        key = authenticate(service, exchange.headers, record)
        raw = await exchange.read_body(service.config.proxy.max_body_bytes)
        body = parse_json_body(raw, max_depth=service.config.proxy.max_json_depth)
        plan = _plan(service, body, key)
    except ProxyError as exc:
        record.fail(exc)
        await send_error(reply, exc)
        service.finish(record)
        return
    except ClientGone:
        record.outcome = Outcome.CLIENT_CANCELLED
        service.finish(record)
        return
    assert isinstance(body, dict)  # _plan checked it
    passthrough = Passthrough("anthropic", body, _decoded(exchange.headers))
    sink: MessagesSSESink | MessagesJSONSink = (
        MessagesSSESink(reply, plan) if plan.stream else MessagesJSONSink(reply, plan)
    )
    await run_pump(service, exchange, plan.body, key, record, sink, passthrough=passthrough)


@dataclass(frozen=True, slots=True)
class Plan:
    """What the pump runs for one Messages request, and what its answer needs."""

    body: dict[str, Any]  # the validated neutral chat request (or the relay-only stand-in)
    model: str  # as the client named it
    stream: bool
    stop_sequences: tuple[str, ...] = ()
    # No candidate is an Anthropic upstream: the answer is surely translated, and is reported
    # under this model until a chunk names its own.
    translated_as: str | None = None


def _plan(service: Service, body: object, key: ClientKey) -> Plan:
    if not isinstance(body, dict):
        raise ClientError(
            "request body must be a JSON object with model, max_tokens and messages",
            code="invalid_type",
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ClientError(
            'model is required: a non-empty string naming the model, e.g. "model": '
            '"claude-sonnet-4-5"',
            param="model",
            code="missing_required_parameter" if model is None else "invalid_type",
        )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ClientError("stream must be true or false", param="stream", code="invalid_type")
    route = service.engine.router.route(model, key)  # 404 / 403 / 503 before anything else
    if all(candidate.upstream.type == "anthropic" for candidate in route.candidates):
        _check_relay_only(body, service)
        stand_in = {
            "model": model,
            "messages": [{"role": "user", "content": "(relayed unchanged)"}],
            "stream": bool(stream),
        }
        return Plan(validate_chat_request(stand_in, limits=service.limits), model, bool(stream))
    inbound = chat_request_from_anthropic(body)
    neutral = validate_chat_request(inbound.body, limits=service.limits)
    mixed = any(candidate.upstream.type == "anthropic" for candidate in route.candidates)
    return Plan(
        neutral,
        model,
        inbound.stream,
        inbound.stop_sequences,
        translated_as=None if mixed else route.candidates[0].target.upstream_model,
    )


def _check_relay_only(body: dict[str, Any], service: Service) -> None:
    # What the proxy itself holds a pass-through to: the operator's size limits. The rest is
    # Anthropic's to judge (a new field must not be refused by an older proxy).
    limits = service.limits
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise ClientError(
            "messages is required: an array of {role, content} turns",
            param="messages",
            code="missing_required_parameter" if messages is None else "invalid_type",
        )
    if len(messages) > limits.max_messages:
        raise ClientError(
            f"messages has {len(messages)} entries; this proxy accepts at most "
            f"{limits.max_messages} (max_messages)",
            param="messages",
            code="array_above_max_length",
        )
    tools = body.get("tools")
    if isinstance(tools, list) and len(tools) > limits.max_tools:
        raise ClientError(
            f"tools has {len(tools)} entries; this proxy accepts at most {limits.max_tools} "
            "(max_tools)",
            param="tools",
            code="array_above_max_length",
        )


def _decoded(headers: Headers) -> tuple[tuple[str, str], ...]:
    return tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in headers)


def _request_id(reply: Reply) -> tuple[bytes, bytes]:
    # The anthropic SDKs read `request-id` (anthropic-sdk-python _exceptions.py, APIStatusError
    # and `_request_id`); Reply adds `x-request-id` with the same value.
    return (b"request-id", reply.record.request_id.encode("latin-1"))


async def send_error(reply: Reply, exc: ProxyError) -> None:
    """`exc` as Anthropic answers errors: its status, envelope and headers (`retry-after`)."""
    answer = anthropic_error(exc, request_id=reply.record.request_id)
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers]
    await reply.json(answer.status, answer.body, *headers, _request_id(reply))


def frame_event(event: SSEEvent) -> bytes:
    """A relayed upstream event as SSE: its `event:` name and `data:` unchanged.

    An event without an `event:` line has the default name `message` (WHATWG HTML 9.2.6) and is
    written without one, as it came.

    >>> from trioproxy.sse import SSEEvent
    >>> frame_event(SSEEvent(data='{"type":"ping"}', event="ping"))
    b'event: ping\\ndata: {"type":"ping"}\\n\\n'
    """
    lines = [] if event.event == "message" else [f"event: {event.event}"]
    if event.id is not None:
        lines.append(f"id: {event.id}")
    lines += [f"data: {line}" for line in event.data.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def _message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def _model_of(answer: dict[str, Any], plan: Plan) -> str:
    # The model that answered, as the engine reports it (docs/streaming.md "The model name").
    model = answer.get("model")
    return model if isinstance(model, str) and model else plan.model


class MessagesSSESink:
    """An Anthropic event stream: relayed events as they came, or translated chunks."""

    def __init__(self, reply: Reply, plan: Plan) -> None:
        self._reply = reply
        self._exchange = reply.exchange
        self._plan = plan
        self._translator: AnthropicStreamTranslator | None = None
        self._written = False  # any event sent yet

    async def commit(self) -> None:
        await self._reply.start_stream(_request_id(self._reply))

    async def send_events(self, events: list[SSEEvent]) -> None:
        self._written = True
        await self._exchange.send(b"".join(frame_event(event) for event in events))

    def _translator_for(self, model: str) -> AnthropicStreamTranslator:
        if self._translator is None:
            self._translator = AnthropicStreamTranslator(
                _message_id(), model, stop_sequences=self._plan.stop_sequences
            )
        return self._translator

    async def send_chunks(self, chunks: list[Chunk]) -> None:
        self._written = True
        out: list[dict[str, Any]] = []
        failure: ProxyError | None = None
        for chunk in chunks:
            translator = self._translator_for(_model_of(chunk, self._plan))
            try:
                out += translator.feed(chunk)
            except ProxyError as exc:  # the pump ends the stream with its error event
                failure = exc
                break
        if out:  # what came before a failure goes first, as it arrived
            await self._exchange.send(b"".join(encode_event(event) for event in out))
        if failure is not None:
            raise failure

    async def keepalive(self) -> None:
        events = [ping_event()]
        if not self._written and self._plan.translated_as is not None:
            # Silence before the first chunk (the engine holds a content-less first chunk while
            # an error could still get a status): Anthropic's own streams start with
            # `message_start` and ping after it, so the message starts now.
            events = self._translator_for(self._plan.translated_as).feed({"choices": []})
        # Otherwise a ping, even first: the Anthropic SDKs skip pings wherever they come
        # (anthropic-sdk-python _streaming.py: `if sse.event == "ping": continue`).
        self._written = True
        await self._exchange.send(b"".join(encode_event(event) for event in events))

    async def finish(self) -> None:
        # A relayed stream already carried its own terminal event (`message_stop`).
        if self._translator is not None:
            try:
                events = self._translator.finish()
            except ProxyError as exc:
                self._reply.record.fail(exc)
                events = [error_event(exc)]
            if events:
                await self._exchange.send(b"".join(encode_event(event) for event in events))
        await self._exchange.end()

    async def complete(self, completion: dict[str, Any]) -> None:  # pragma: no cover - streams
        raise AssertionError("a streaming request has no complete answer")

    async def fail(self, error: ProxyError, *, committed: bool) -> None:
        if not committed:
            await send_error(self._reply, error)
            return
        await self._exchange.send(encode_event(error_event(error)))
        await self._exchange.end()


class MessagesJSONSink(OneAnswerSink):
    """A non-streaming answer: one Anthropic `message` (relayed or translated), or an error."""

    def __init__(self, reply: Reply, plan: Plan) -> None:
        super().__init__(reply)
        self._plan = plan

    async def complete(self, completion: dict[str, Any]) -> None:
        answer = completion
        if not self._reply.record.relayed:  # a chat.completion from another upstream
            # Raises ProxyError for an answer it cannot render: the pump then calls `fail`.
            answer = message_from_chat_completion(
                completion,
                message_id=_message_id(),
                model=_model_of(completion, self._plan),
                stop_sequences=self._plan.stop_sequences,
            )
        await self._reply.json(200, answer, _request_id(self._reply))

    async def fail(self, error: ProxyError, *, committed: bool) -> None:
        await send_error(self._reply, error)


# --- POST /v1/messages/count_tokens -----------------------------------------------------------


async def serve_count_tokens(
    service: Service, exchange: Exchange, reply: Reply, record: RequestRecord
) -> None:
    """Count a Messages request's input tokens: relayed to the model's Anthropic upstream, or a
    local estimate (translate/from_anthropic_count.py) for any other upstream, said in the
    `x-trioproxy-token-count` header (`upstream` / `estimate`). Finishes `record`."""
    try:
        key = authenticate(service, exchange.headers, record)
        raw = await exchange.read_body(service.config.proxy.max_body_bytes)
        body = parse_json_body(raw, max_depth=service.config.proxy.max_json_depth)
        answer, source = await _count(service, exchange, body, key, record)
    except ProxyError as exc:
        record.fail(exc)
        await send_error(reply, exc)
    except ClientGone:
        record.outcome = Outcome.CLIENT_CANCELLED
    else:
        if answer is None:  # the client left while the upstream counted
            record.outcome = Outcome.CLIENT_CANCELLED
        else:
            await reply.json(200, answer, _request_id(reply), (TOKEN_COUNT_HEADER, source))
            record.outcome = Outcome.COMPLETED
    service.finish(record)


async def _count(
    service: Service, exchange: Exchange, body: object, key: ClientKey, record: RequestRecord
) -> tuple[dict[str, Any] | None, bytes]:
    if not isinstance(body, dict):
        raise ClientError(
            "request body must be a JSON object with model and messages", code="invalid_type"
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ClientError(
            "model is required: a non-empty string naming the model",
            param="model",
            code="missing_required_parameter" if model is None else "invalid_type",
        )
    record.model = model
    if not isinstance(body.get("messages"), list):
        raise ClientError(
            "messages is required: an array of {role, content} turns",
            param="messages",
            code="invalid_type",
        )
    first = service.engine.router.route(model, key).candidates[0]
    if first.upstream.type != "anthropic":
        return {"input_tokens": estimate_input_tokens(body)}, b"estimate"
    passthrough = Passthrough("anthropic", body, _decoded(exchange.headers))
    service.limiter.acquire(key, trio.current_time())
    answer: dict[str, Any] | None = None
    failure: ProxyError | None = None
    try:
        async with trio.open_nursery() as nursery:

            async def cancel_on_disconnect() -> None:
                await exchange.wait_disconnect()
                nursery.cancel_scope.cancel()  # closes the upstream connection

            nursery.start_soon(cancel_on_disconnect)
            try:
                answer = await service.engine.relay_count_tokens(first, passthrough, record)
            except ProxyError as exc:  # raised outside the nursery, not as an exception group
                failure = exc
            nursery.cancel_scope.cancel()
    finally:
        service.limiter.release(key)
    if failure is not None:
        raise failure
    return answer, b"upstream"
