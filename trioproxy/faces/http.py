"""The HTTP face: routes, the JSON and SSE answers of `POST /v1/chat/completions`, CORS.

Stage: the IO edge facing HTTP clients, above the pump and below a server. A server (our h11
server, or the ASGI adapter under hypercorn or any ASGI server) parses the request head and hands
this face an `Exchange`: the head, a way to read the body, to write the answer, and to wait for
the client to leave. One request: route by path -> auth -> read the body (size-limited; only now
is `Expect: 100-continue` answered) -> parse + validate -> `pump.handle` with an SSE or JSON sink,
beside a task that cancels it when the client leaves.

Invariants: every response carries exactly one `x-request-id` (the proxy's id for the request);
the upstream's id travels as `x-upstream-request-id`. Every request is finished (logged, counted)
exactly once: by the pump when it ran, here otherwise.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Any, Protocol

import trio

from trioproxy import framing, pump
from trioproxy.auth import key_from_headers
from trioproxy.errors import ClientError, ProxyError, UnknownModel
from trioproxy.metrics import CONTENT_TYPE
from trioproxy.record import Outcome, RequestRecord
from trioproxy.validate import parse_json_body, validate_chat_request

if TYPE_CHECKING:
    from trioproxy.config_types import ClientKey
    from trioproxy.service import Runtime, Service
    from trioproxy.translate.base import Chunk

__all__ = ["ClientGone", "Exchange", "serve_request"]

Headers = list[tuple[bytes, bytes]]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
# Request headers a browser may ask to send (Access-Control-Request-Headers) are echoed back for
# an allowed origin, if each is a plain token (RFC 9110 §5.6.2) and there are not too many.
_TOKEN_LIST = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*,\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*")
_MAX_PREFLIGHT_HEADERS = 4096  # bytes of Access-Control-Request-Headers we echo at most
_EXPOSED = b"x-request-id, x-upstream-request-id, retry-after, x-should-retry"


class ClientGone(Exception):
    """The client left (or stalled past a deadline) while its request was being read."""


class Exchange(Protocol):
    """One HTTP request/response, as a server hands it to this face."""

    method: str
    path: str  # without the query string
    headers: Headers  # names lower-case

    async def read_body(self, limit: int) -> bytes:
        """The whole body; raises `RequestTooLarge` past `limit` bytes, `ClientGone`, or a
        `ClientError` (408) when the client stalls inside the body."""

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        """A whole response at once."""

    async def start(self, status: int, headers: Headers) -> None:
        """The head of a streamed response."""

    async def send(self, data: bytes) -> None:
        """A piece of a streamed response body. When the client is gone or stalls past the write
        deadline, the data is dropped and `wait_disconnect` returns."""

    async def end(self) -> None:
        """The end of a streamed response."""

    async def wait_disconnect(self) -> None:
        """Return when the client has left (or a write to it failed)."""


async def serve_request(runtime: Runtime, exchange: Exchange) -> None:
    """Answer one request; never raises for anything the client did."""
    service = runtime.service  # this request keeps this generation, whatever a reload does
    headers = exchange.headers
    record = RequestRecord(request_id=_request_id(headers), started=trio.current_time())
    reply = _Reply(exchange, record, _cors_headers(service, headers))
    method, path = exchange.method, exchange.path
    try:
        # Our server and hypercorn's HTTP/1.1 bound the head while it arrives; this also bounds
        # what other ASGI servers and HTTP/2 hand us.
        limit = service.config.proxy.max_header_bytes
        if sum(len(name) + len(value) + 4 for name, value in headers) > limit:
            raise _HeadersTooLarge(
                f"request headers are larger than {limit} bytes (max_header_bytes); send fewer "
                "or shorter headers"
            )
        if method == "OPTIONS" and reply.cors:
            await reply.preflight(headers)  # CORS preflight (Fetch standard, "CORS protocol")
        elif path == "/health":
            _require(method, "GET")
            await reply.json(200, service.health())
        elif path == "/metrics" and service.config.proxy.metrics:
            _require(method, "GET")
            service.check_metrics_key(headers)
            await reply.text(200, service.render_metrics(), CONTENT_TYPE)
        elif path == "/v1/models":
            _require(method, "GET")
            _authenticate(service, headers, record)
            await reply.json(200, service.models())
        elif path.startswith("/v1/models/"):
            _require(method, "GET")
            _authenticate(service, headers, record)
            await reply.json(200, _model(service, path[len("/v1/models/") :]))
        elif path == "/v1/chat/completions":
            _require(method, "POST")
            await _chat(service, exchange, reply, record)
            return  # the pump finished the record (or _chat did)
        else:
            raise _NotFound(
                f"no route for {method} {path}; see GET /health and POST /v1/chat/completions"
            )
    except ProxyError as exc:
        record.outcome = record.outcome or Outcome.REJECTED
        record.error_code = exc.code
        await reply.error(exc)
    except ClientGone:
        record.outcome = Outcome.CLIENT_CANCELLED
    service.finish(record)


async def _chat(service: Service, exchange: Exchange, reply: _Reply, record: RequestRecord) -> None:
    try:
        key = _authenticate(service, exchange.headers, record)
        raw = await exchange.read_body(service.config.proxy.max_body_bytes)
        body = validate_chat_request(
            parse_json_body(raw, max_depth=service.config.proxy.max_json_depth),
            limits=service.limits,
        )
    except ProxyError as exc:
        record.fail(exc)
        await reply.error(exc)
        service.finish(record)
        return
    except ClientGone:
        record.outcome = Outcome.CLIENT_CANCELLED
        service.finish(record)
        return
    record.client_headers = tuple(
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in exchange.headers
    )
    sink: pump.Sink = _SSESink(reply) if body.get("stream") else _JSONSink(reply)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_disconnect, exchange, nursery.cancel_scope)
        await pump.handle(service, body, key, record, sink)
        nursery.cancel_scope.cancel()


async def _cancel_on_disconnect(exchange: Exchange, scope: trio.CancelScope) -> None:
    await exchange.wait_disconnect()
    scope.cancel()  # the pump's upstream connection closes with it


# --- small routes ------------------------------------------------------------------------------


class _NotFound(ClientError):
    status_hint = 404
    error_type_hint = "not_found_error"
    code_hint = "not_found"


class _HeadersTooLarge(ClientError):
    status_hint = 431  # RFC 6585 §5
    code_hint = "request_headers_too_large"


class _MethodNotAllowed(ClientError):
    status_hint = 405
    code_hint = "method_not_allowed"


def _require(method: str, allowed: str) -> None:
    if method != allowed:
        raise _MethodNotAllowed(f"use {allowed} for this route, not {method}")


def _request_id(headers: Headers) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
    return "req_" + secrets.token_hex(12)


def _authenticate(service: Service, headers: Headers, record: RequestRecord) -> ClientKey:
    key = service.authenticate(key_from_headers(headers))
    record.key_name = key.name
    return key


def _model(service: Service, name: str) -> dict[str, Any]:
    """`GET /v1/models/{id}`: the model object of a configured model (a pattern model answers
    with the name asked for, when it matches), else 404 `model_not_found`."""
    owner = service.engine.router.owner_of(name)
    if owner is None:
        raise UnknownModel(
            f"the model '{name}' is not served here; GET /v1/models lists the models",
            param="model",
        )
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}


def _cors_headers(service: Service, headers: Headers) -> Headers:
    """CORS response headers when the request's Origin is allowed (`cors_origins`), else []."""
    allowed = service.config.proxy.cors_origins
    if not allowed:
        return []
    origin = next((v for k, v in headers if k == b"origin"), None)
    if origin is None or ("*" not in allowed and origin.decode("latin-1") not in allowed):
        return []
    return [
        (b"access-control-allow-origin", origin),
        (b"vary", b"origin"),
        (b"access-control-expose-headers", _EXPOSED),
    ]


class _Reply:
    """Whole responses, with the request ids and CORS headers on every one."""

    def __init__(self, exchange: Exchange, record: RequestRecord, cors: Headers) -> None:
        self.exchange = exchange
        self.record = record
        self.cors = cors

    def headers(self, *extra: tuple[bytes, bytes]) -> Headers:
        out = [(b"x-request-id", self.record.request_id.encode("latin-1"))]
        upstream_id = self.record.upstream_request_id
        if upstream_id:
            out.append((b"x-upstream-request-id", upstream_id.encode("latin-1", "replace")))
        return [*out, *self.cors, *extra]

    async def respond(self, status: int, data: bytes, content_type: bytes, *extra: Any) -> None:
        self.record.status = status
        headers = self.headers(
            (b"content-type", content_type), (b"content-length", b"%d" % len(data)), *extra
        )
        await self.exchange.respond(status, headers, data)

    async def json(self, status: int, payload: Any, *extra: tuple[bytes, bytes]) -> None:
        await self.respond(status, framing.json_bytes(payload), b"application/json", *extra)

    async def text(self, status: int, text: str, content_type: str) -> None:
        await self.respond(status, text.encode("utf-8"), content_type.encode())

    async def error(self, exc: ProxyError) -> None:
        extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers]
        await self.json(exc.status, framing.error_body(exc), *extra)

    async def preflight(self, request_headers: Headers) -> None:
        # A browser sends the preflight before the real request and names the headers that one
        # will carry (the openai npm package adds x-stainless-*); for an allowed origin, allow
        # exactly those (Fetch standard, "CORS-preflight fetch").
        asked = next((v for k, v in request_headers if k == b"access-control-request-headers"), b"")
        asked = asked.strip()
        allow = b"authorization, content-type, x-api-key, x-request-id"
        if asked and len(asked) <= _MAX_PREFLIGHT_HEADERS and _TOKEN_LIST.fullmatch(asked):
            allow = asked.lower()
        self.record.status = 204
        headers = [
            (name, b"origin, access-control-request-headers" if name == b"vary" else value)
            for name, value in self.headers()
        ]
        await self.exchange.respond(
            204,
            [
                *headers,
                (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                (b"access-control-allow-headers", allow),
                (b"access-control-max-age", b"600"),
            ],
            b"",
        )


class _SSESink:
    """A chat stream as SSE (`data:` lines only; DESIGN.md "The chat stream")."""

    def __init__(self, reply: _Reply) -> None:
        self._reply = reply
        self._exchange = reply.exchange

    async def commit(self) -> None:
        self._reply.record.status = 200
        await self._exchange.start(200, self._reply.headers(*framing.SSE_HEADERS))

    async def send_chunks(self, chunks: list[Chunk]) -> None:
        if len(chunks) == 1:
            await self._exchange.send(framing.sse_event(chunks[0]))
        else:
            await self._exchange.send(b"".join(framing.sse_event(item) for item in chunks))

    async def keepalive(self) -> None:
        await self._exchange.send(framing.KEEPALIVE)

    async def finish(self) -> None:
        await self._exchange.send(framing.DONE)
        await self._exchange.end()

    async def complete(self, completion: dict[str, Any]) -> None:  # pragma: no cover - streams only
        raise AssertionError("a streaming request has no complete answer")

    async def fail(self, error: ProxyError, *, committed: bool) -> None:
        if not committed:
            await self._reply.error(error)
            return
        await self._exchange.send(framing.sse_event(framing.error_body(error)))
        await self._exchange.end()


class _JSONSink:
    """A non-streaming answer: one JSON body, or an error status."""

    def __init__(self, reply: _Reply) -> None:
        self._reply = reply

    async def commit(self) -> None:  # pragma: no cover - the pump commits streams only
        pass

    async def send_chunks(self, chunks: list[Chunk]) -> None:  # pragma: no cover
        raise AssertionError("a non-streaming request has no chunks")

    async def keepalive(self) -> None:  # pragma: no cover
        pass

    async def finish(self) -> None:  # pragma: no cover
        pass

    async def complete(self, completion: dict[str, Any]) -> None:
        await self._reply.json(200, completion)

    async def fail(self, error: ProxyError, *, committed: bool) -> None:
        await self._reply.error(error)
