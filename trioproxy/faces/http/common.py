"""What every HTTP route shares: the `Exchange` a server hands us, replies, auth, the pump call.

Stage: the IO edge facing HTTP clients (the HTTP face; see `routes` for the routes). A server
(our h11 server, or the ASGI adapter under hypercorn or any ASGI server) parses the request head
and hands the face an `Exchange`: the head, a way to read the body, to write the answer, and to
wait for the client to leave.

Invariants: every response carries exactly one `x-request-id` (the proxy's id for the request);
the upstream's id travels as `x-upstream-request-id`.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Any, Protocol

import trio

from trioproxy import framing, pump
from trioproxy.auth import key_from_headers
from trioproxy.errors import ClientError

if TYPE_CHECKING:
    from trioproxy.config_types import ClientKey
    from trioproxy.errors import ProxyError
    from trioproxy.record import RequestRecord
    from trioproxy.service import Service
    from trioproxy.sse import SSEEvent
    from trioproxy.translate.base import Chunk
    from trioproxy.translate.relay import Passthrough

__all__ = [
    "ClientGone",
    "Exchange",
    "Headers",
    "MethodNotAllowed",
    "NotFound",
    "OneAnswerSink",
    "Reply",
    "authenticate",
    "header",
    "request_id",
    "run_pump",
]

Headers = list[tuple[bytes, bytes]]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
_EXPOSED = b"x-request-id, x-upstream-request-id, request-id, retry-after, x-should-retry"


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


class NotFound(ClientError):
    status_hint = 404
    error_type_hint = "not_found_error"
    code_hint = "not_found"


class MethodNotAllowed(ClientError):
    status_hint = 405
    code_hint = "method_not_allowed"


def header(headers: Headers, name: bytes) -> bytes | None:
    return next((value for key, value in headers if key == name), None)


def request_id(headers: Headers) -> str:
    """The client's `x-request-id` when it is a sane token, else a new one."""
    value = header(headers, b"x-request-id")
    if value is not None:
        text = value.decode("latin-1")
        if _REQUEST_ID.fullmatch(text):
            return text
    return "req_" + secrets.token_hex(12)


def authenticate(service: Service, headers: Headers, record: RequestRecord) -> ClientKey:
    """The caller behind the request's key (`Authorization: Bearer` or `x-api-key`)."""
    key = service.authenticate(key_from_headers(headers))
    record.key_name = key.name
    return key


def cors_headers(service: Service, headers: Headers) -> Headers:
    """CORS response headers when the request's Origin is allowed (`cors_origins`), else []."""
    allowed = service.config.proxy.cors_origins
    if not allowed:
        return []
    origin = header(headers, b"origin")
    if origin is None or ("*" not in allowed and origin.decode("latin-1") not in allowed):
        # The answer depends on the Origin, so caches must key on it (Fetch standard, "CORS
        # protocol and HTTP caches").
        return [(b"vary", b"origin")]
    return [
        (b"access-control-allow-origin", origin),
        (b"vary", b"origin"),
        (b"access-control-expose-headers", _EXPOSED),
    ]


class Reply:
    """Whole responses, with the request ids and CORS headers on every one."""

    __slots__ = ("cors", "exchange", "record")

    def __init__(self, exchange: Exchange, record: RequestRecord, cors: Headers) -> None:
        self.exchange = exchange
        self.record = record
        self.cors = cors

    @property
    def allows_origin(self) -> bool:
        """The request came from an allowed browser origin (`cors_origins`)."""
        return any(name == b"access-control-allow-origin" for name, _ in self.cors)

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
        """`exc` in the OpenAI envelope, with its status and headers (e.g. `retry-after`)."""
        await self.json(exc.status, framing.error_body(exc), *error_headers(exc))

    async def start_stream(self, *extra: tuple[bytes, bytes]) -> None:
        """The 200 head of an event stream (DESIGN.md "The chat stream")."""
        self.record.status = 200
        await self.exchange.start(200, self.headers(*framing.SSE_HEADERS, *extra))


class OneAnswerSink:
    """The stream half of a non-streaming request's sink: never called by the pump (it streams
    nothing for such a request). Subclasses write the one answer (`complete`) and the error
    (`fail`, by default the OpenAI envelope)."""

    def __init__(self, reply: Reply) -> None:
        self._reply = reply

    async def commit(self) -> None:  # pragma: no cover - the pump commits streams only
        pass

    async def send_chunks(self, chunks: list[Chunk]) -> None:  # pragma: no cover
        raise AssertionError("a non-streaming request has no chunks")

    async def send_events(self, events: list[SSEEvent]) -> None:  # pragma: no cover
        raise AssertionError("a non-streaming request has no events")

    async def keepalive(self) -> None:  # pragma: no cover
        pass

    async def finish(self) -> None:  # pragma: no cover
        pass

    async def complete(self, completion: dict[str, Any]) -> None:
        await self._reply.json(200, completion)

    async def fail(self, error: ProxyError, *, committed: bool) -> None:
        await self._reply.error(error)


def error_headers(exc: ProxyError) -> Headers:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers]


async def run_pump(
    service: Service,
    exchange: Exchange,
    body: dict[str, Any],
    caller: ClientKey,
    record: RequestRecord,
    sink: pump.Sink,
    *,
    passthrough: Passthrough | None = None,
) -> None:
    """`pump.handle` beside a task that cancels it when the client leaves (STYLE.md §3: the
    watcher cancels the scope that runs the pump, never the one that closes the connection)."""
    wanted = service.forwarded_headers
    if wanted:
        record.client_headers = tuple(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in exchange.headers
            if name in wanted
        )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_disconnect, exchange, nursery.cancel_scope)
        await pump.handle(service, body, caller, record, sink, passthrough=passthrough)
        nursery.cancel_scope.cancel()


async def _cancel_on_disconnect(exchange: Exchange, scope: trio.CancelScope) -> None:
    await exchange.wait_disconnect()
    scope.cancel()  # the pump's upstream connection closes with it
