"""The ASGI application: HTTP routes, the SSE and JSON faces, lifespan.

Stage: the IO edge facing clients. One request: route by path -> read the body (size-limited) ->
auth -> parse + validate -> `Engine.run_stream` / `Engine.run_complete` inside the pump. The pump is
one nursery per request: the engine in its own cancel scope, a task blocked on `receive()` for
`http.disconnect` (hypercorn does not raise from `send()` after a disconnect; polling `receive()`
misses it, hypercorn#210), a keep-alive ticker and a shutdown watcher.

Invariants: response headers are held until the first chunk (or until the keep-alive interval
passes), so every failure before then is a real HTTP status with the OpenAI envelope; after them, a
failure is one `data: {"error": ...}` chunk and the stream ends without `[DONE]`. Every request ends
with exactly one `Outcome`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import re
import secrets
from typing import TYPE_CHECKING, Any

import trio

from trioproxy import framing
from trioproxy._version import __version__
from trioproxy.auth import Authenticator, key_from_headers
from trioproxy.engine import Engine
from trioproxy.errors import (
    AuthError,
    ClientError,
    ProxyError,
    RequestTooLarge,
    ServerShutdown,
)
from trioproxy.limits import KeyLimiter
from trioproxy.logs import log_access
from trioproxy.metrics import CONTENT_TYPE, Metrics
from trioproxy.record import Outcome, RequestRecord, request_sample
from trioproxy.validate import RequestLimits, parse_json_body, validate_chat_request

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, MutableMapping

    from trioproxy.config_types import ClientKey, ProxyConfig
    from trioproxy.translate.base import Chunk
    from trioproxy.upstream import HTTPClient

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]

__all__ = ["ProxyApp", "Shutdown"]

logger = logging.getLogger("trioproxy")

# Request headers larger than this get 431. nginx's default is 4 buffers of 8 KiB
# (large_client_header_buffers); an API client needs a few hundred bytes. h11's own limit
# (`max_incomplete_event_size`) only applies while a head is incomplete, so it is checked here too.
MAX_HEADER_BYTES = 32 * 1024

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


class Shutdown:
    """Graceful shutdown in two steps: stop taking requests (`drain`), then end what is still
    running with a `server_shutdown` error (`expire`, when `drain_timeout` has passed)."""

    def __init__(self) -> None:
        self.draining = trio.Event()
        self.expired = trio.Event()
        # Engine scopes to cancel on `expire`, with the request each one serves. A registry rather
        # than a watcher task per request: a task costs a spawn per request and memory per stream.
        self._guarded: dict[trio.CancelScope, RequestRecord] = {}

    def drain(self) -> None:
        self.draining.set()

    def expire(self) -> None:
        self.draining.set()
        self.expired.set()
        for scope, record in list(self._guarded.items()):
            self._end(scope, record)

    @contextlib.contextmanager
    def guard(self, scope: trio.CancelScope, record: RequestRecord) -> Iterator[None]:
        """While inside, `expire()` cancels `scope` and marks `record` as ended by shutdown."""
        if self.expired.is_set():
            self._end(scope, record)
        self._guarded[scope] = record
        try:
            yield
        finally:
            del self._guarded[scope]

    @staticmethod
    def _end(scope: trio.CancelScope, record: RequestRecord) -> None:
        if record.outcome is None:
            record.outcome = Outcome.SHUTDOWN
        scope.cancel()


class ProxyApp:
    """The trioproxy ASGI 3 application (trio-mode servers only: it uses trio primitives).

    Args:
        config: the parsed configuration.
        http: the upstream HTTP client (shared across reloads; the app does not close it).
    """

    def __init__(self, config: ProxyConfig, http: HTTPClient) -> None:
        self.http = http
        self.shutdown = Shutdown()
        self.active_streams = 0
        self._in_flight = 0  # chat requests and WebSocket sockets being served
        self._idle = trio.Event()
        self._idle.set()
        self.on_finish: list[Callable[[RequestRecord], None]] = []
        self.metrics = Metrics()
        self.limiter = KeyLimiter()  # kept across reloads: a reload must not reset the buckets
        self.load(config)

    def load(self, config: ProxyConfig) -> None:
        """Use `config` for new requests; requests in flight keep the engine they started with."""
        self.config = config
        self.engine = Engine(config, self.http)
        self.auth = Authenticator(config.proxy.keys)
        self.limits = RequestLimits.from_settings(config.proxy)

    async def wait_idle(self) -> None:
        """Return once no chat request or WebSocket is being served (used to drain on shutdown)."""
        while self._in_flight:
            await self._idle.wait()

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        if self._in_flight == 0:
            self._idle = trio.Event()
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    # -- ASGI entry ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            from trioproxy.websocket import serve_websocket

            await serve_websocket(self, scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        # Answer both steps and only then return: a lifespan app that returns early crashes
        # hypercorn's trio worker at start-up (DESIGN.md, hypercorn defects).
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- HTTP --------------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
        record = RequestRecord(request_id=self._request_id(headers), started=trio.current_time())
        reply = _Reply(send, record, self._cors_headers(headers))
        method, path = scope["method"], scope["path"]
        try:
            if sum(len(name) + len(value) + 4 for name, value in headers) > MAX_HEADER_BYTES:
                raise _HeadersTooLarge(
                    f"request headers are larger than {MAX_HEADER_BYTES} bytes; send fewer or "
                    "shorter headers"
                )
            if method == "OPTIONS" and reply.cors:
                await reply.preflight()  # CORS preflight (Fetch standard, "CORS protocol")
            elif path == "/health":
                self._require(method, "GET")
                await reply.json(200, self.health())
            elif path == "/metrics" and self.config.proxy.metrics:
                self._require(method, "GET")
                self._check_metrics_key(headers)
                await reply.text(200, self.render_metrics(), CONTENT_TYPE)
            elif path == "/v1/models":
                self._require(method, "GET")
                self._authenticate(headers, record)
                await reply.json(200, self.models())
            elif path == "/v1/chat/completions":
                self._require(method, "POST")
                with self.in_flight():
                    await self._chat(headers, receive, reply, record)
            else:
                raise _NotFound(
                    f"no route for {method} {path}; see GET /health and POST /v1/chat/completions"
                )
        except ProxyError as exc:
            record.outcome = record.outcome or Outcome.REJECTED
            record.error_code = exc.code
            await reply.error(exc)
        finally:
            self.finish_request(record)

    def _cors_headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """CORS response headers when the request's Origin is allowed (`cors_origins`), else []."""
        allowed = self.config.proxy.cors_origins
        if not allowed:
            return []
        origin = next((v for k, v in headers if k == b"origin"), None)
        if origin is None or ("*" not in allowed and origin.decode("latin-1") not in allowed):
            return []
        return [
            (b"access-control-allow-origin", origin),
            (b"vary", b"origin"),
            (b"access-control-expose-headers", b"x-request-id, retry-after"),
        ]

    def _check_metrics_key(self, headers: list[tuple[bytes, bytes]]) -> None:
        expected = self.config.proxy.metrics_key
        if expected is None:
            return
        presented = key_from_headers(headers) or ""
        digest = hashlib.sha256
        if not hmac.compare_digest(
            digest(presented.encode()).digest(), digest(expected.encode()).digest()
        ):
            raise AuthError("GET /metrics needs the metrics_key as 'Authorization: Bearer KEY'")

    def render_metrics(self) -> str:
        return self.metrics.render(
            {
                "trioproxy_active_streams": ("SSE streams being served.", self.active_streams),
                "trioproxy_in_flight": (
                    "Chat requests and WebSockets being served.",
                    self._in_flight,
                ),
            }
        )

    @staticmethod
    def _require(method: str, allowed: str) -> None:
        if method != allowed:
            raise _MethodNotAllowed(f"use {allowed} for this route, not {method}")

    @staticmethod
    def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
        for name, value in headers:
            if name == b"x-request-id":
                text = value.decode("latin-1")
                if _REQUEST_ID.fullmatch(text):
                    return text
        return "req_" + secrets.token_hex(12)

    def _authenticate(self, headers: list[tuple[bytes, bytes]], record: RequestRecord) -> ClientKey:
        key = self.auth.authenticate(key_from_headers(headers))
        record.key_name = key.name
        return key

    async def _chat(
        self,
        headers: list[tuple[bytes, bytes]],
        receive: Receive,
        reply: _Reply,
        record: RequestRecord,
    ) -> None:
        key = self._authenticate(headers, record)
        if self.shutdown.draining.is_set():
            raise ServerShutdown("the server is shutting down; retry on another instance")
        self.limiter.acquire(key, trio.current_time())
        try:
            await self._chat_admitted(key, headers, receive, reply, record)
        finally:
            self.limiter.release(key)

    async def _chat_admitted(
        self,
        key: ClientKey,
        headers: list[tuple[bytes, bytes]],
        receive: Receive,
        reply: _Reply,
        record: RequestRecord,
    ) -> None:
        raw = await self._read_body_or_disconnect(headers, receive, record)
        if raw is None:
            return
        body = validate_chat_request(
            parse_json_body(raw, max_depth=self.config.proxy.max_json_depth), limits=self.limits
        )
        record.model = body["model"]
        record.client_headers = tuple(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in headers
        )
        record.stream = bool(body.get("stream"))
        engine = self.engine  # a reload during this request does not change it
        if record.stream:
            await self._pump_stream(engine, body, key, receive, reply, record)
        else:
            await self._pump_complete(engine, body, key, receive, reply, record)

    async def _read_body_or_disconnect(
        self, headers: list[tuple[bytes, bytes]], receive: Receive, record: RequestRecord
    ) -> bytes | None:
        limit = self.config.proxy.max_body_bytes
        for name, value in headers:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise RequestTooLarge(
                    f"request body is larger than {limit} bytes (max_body_bytes)", param=None
                )
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                record.outcome = Outcome.CLIENT_CANCELLED
                return None
            body += message.get("body", b"")
            if len(body) > limit:
                raise RequestTooLarge(
                    f"request body is larger than {limit} bytes (max_body_bytes)", param=None
                )
            if not message.get("more_body", False):
                return bytes(body)

    # -- the pump ------------------------------------------------------------------------------

    async def _pump_stream(
        self,
        engine: Engine,
        body: dict[str, Any],
        key: ClientKey,
        receive: Receive,
        reply: _Reply,
        record: RequestRecord,
    ) -> None:
        interval = self.config.proxy.keepalive_interval
        writer = _SSEWriter(reply)
        self.active_streams += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope, record)
                with (
                    trio.CancelScope() as engine_scope,
                    self.shutdown.guard(engine_scope, record),
                ):
                    nursery.start_soon(_keepalive, writer, interval)
                    try:
                        await engine.run_stream(body, key, record, writer.emit)
                    except ProxyError as exc:
                        record.fail(exc)
                        await writer.fail(exc)
                    else:
                        record.outcome = Outcome.COMPLETED
                        await writer.done()
                if engine_scope.cancelled_caught and record.outcome is Outcome.SHUTDOWN:
                    await writer.fail(
                        ServerShutdown("the server shut down before this answer was complete")
                    )
                nursery.cancel_scope.cancel()
        finally:
            self.active_streams -= 1
            record.status = reply.status

    async def _pump_complete(
        self,
        engine: Engine,
        body: dict[str, Any],
        key: ClientKey,
        receive: Receive,
        reply: _Reply,
        record: RequestRecord,
    ) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope, record)
            with trio.CancelScope() as engine_scope, self.shutdown.guard(engine_scope, record):
                try:
                    completion = await engine.run_complete(body, key, record)
                except ProxyError as exc:
                    record.fail(exc)
                    await reply.error(exc)
                else:
                    record.outcome = Outcome.COMPLETED
                    await reply.json(200, completion)
            if engine_scope.cancelled_caught and record.outcome is Outcome.SHUTDOWN:
                await reply.error(
                    ServerShutdown("the server shut down before the answer was ready")
                )
            nursery.cancel_scope.cancel()

    # -- small routes --------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Status, version and each upstream's state. Holds no secrets."""
        return {
            "status": "draining" if self.shutdown.draining.is_set() else "ok",
            "version": __version__,
            "auth": "on" if self.auth.enabled else "off (loopback only)",
            "upstreams": {
                name: {
                    "type": upstream.type,
                    "enabled": upstream.enabled,
                    **({"reason": upstream.disabled_reason} if not upstream.enabled else {}),
                }
                for name, upstream in self.config.upstreams.items()
            },
            "active_streams": self.active_streams,
        }

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": model, "object": "model", "created": 0, "owned_by": upstream}
                for model, upstream in self.engine.router.listed_models()
            ],
        }

    def finish_request(self, record: RequestRecord) -> None:
        record.ended = trio.current_time()
        if record.outcome is None:
            record.outcome = Outcome.CLIENT_CANCELLED if record.status == 0 else Outcome.COMPLETED
        log_access(record)
        self.metrics.observe_request(request_sample(record))
        for hook in self.on_finish:
            hook(record)


# --- helpers of the faces -----------------------------------------------------------------------


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


async def _watch_disconnect(
    receive: Receive, scope: trio.CancelScope, record: RequestRecord
) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    if record.outcome is None:
        record.outcome = Outcome.CLIENT_CANCELLED
    scope.cancel()  # also closes the upstream connection inside the engine


async def _keepalive(writer: _SSEWriter, interval: float) -> None:
    while True:
        await trio.sleep_until(writer.last_write + interval)
        if trio.current_time() >= writer.last_write + interval:
            await writer.keepalive()


class _Reply:
    """Plain responses, with the request id on every one."""

    def __init__(self, send: Send, record: RequestRecord, cors: list[tuple[bytes, bytes]]) -> None:
        self._send = send
        self.record = record
        self.cors = cors
        self.status = 0

    def headers(self, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
        request_id = (b"x-request-id", self.record.request_id.encode("latin-1"))
        return [request_id, *self.cors, *extra]

    async def preflight(self) -> None:
        await self.start(
            204,
            self.headers(
                (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                (
                    b"access-control-allow-headers",
                    b"authorization, content-type, x-api-key, x-request-id",
                ),
                (b"access-control-max-age", b"600"),
            ),
        )
        await self.body(b"", more=False)

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.record.status = status
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, *, more: bool) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(self, status: int, payload: Any, *extra: tuple[bytes, bytes]) -> None:
        data = framing.json_bytes(payload)
        await self.start(
            status,
            self.headers(
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *extra,
            ),
        )
        await self.body(data, more=False)

    async def text(self, status: int, text: str, content_type: str) -> None:
        data = text.encode("utf-8")
        await self.start(
            status,
            self.headers(
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(data)).encode()),
            ),
        )
        await self.body(data, more=False)

    async def error(self, exc: ProxyError) -> None:
        extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers]
        await self.json(exc.status, framing.error_body(exc), *extra)


class _SSEWriter:
    """Writes one SSE response; the engine and the keep-alive ticker share it under a lock."""

    def __init__(self, reply: _Reply) -> None:
        self._reply = reply
        self._lock = trio.Lock()
        self.started = False
        self.last_write = trio.current_time()

    async def _write(self, data: bytes) -> None:
        if not self.started:
            self.started = True
            await self._reply.start(200, self._reply.headers(*framing.SSE_HEADERS))
        await self._reply.body(data, more=True)
        self.last_write = trio.current_time()

    async def emit(self, chunks: list[Chunk]) -> None:
        data = b"".join(framing.sse_event(item) for item in chunks)
        if self._lock.locked():  # the keep-alive ticker is writing: wait for it
            async with self._lock:
                await self._write(data)
            return
        # Free (nearly always): take it without `acquire()`'s scheduler round trip, which would
        # cost every chunk a pass through trio's run loop. The engine calls us right after an
        # upstream read, itself a checkpoint.
        self._lock.acquire_nowait()
        try:
            await self._write(data)
        finally:
            self._lock.release()

    async def keepalive(self) -> None:
        async with self._lock:
            await self._write(framing.KEEPALIVE)

    async def done(self) -> None:
        async with self._lock:
            await self._write(framing.DONE)
            await self._reply.body(b"", more=False)

    async def fail(self, exc: ProxyError) -> None:
        async with self._lock:
            if not self.started:
                self.started = True
                await self._reply.error(exc)
                return
            await self._reply.body(framing.sse_event(framing.error_body(exc)), more=True)
            await self._reply.body(b"", more=False)
