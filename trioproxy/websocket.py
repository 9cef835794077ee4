"""The WebSocket face (`GET /v1/ws`): the same pipeline as SSE, multiplexed on one socket.

Stage: the IO edge facing WebSocket clients (DESIGN.md "WebSocket streaming"). One nursery per
socket holds the reader loop and one task per request; each request runs `Engine.run_stream` in its
own cancel scope, so a `cancel` message, an error, or the in-flight limit touches one request only,
and closing the socket cancels them all (and so closes their upstream connections).

Protocol `trioproxy.v1` (text frames, one JSON object each):
  client: {"type": "chat.completions.create", "id": "c1", "body": {...}}
          {"type": "cancel", "id": "c1"}
  server: {"type": "chunk", "id", "chunk"} ... then exactly one of
          {"type": "done", "id"} | {"type": "error", "id", "error"} | {"type": "cancelled", "id"}
A malformed message gets an `error` with `"id": null` (or its id, when readable); the socket stays.
Auth: `Authorization: Bearer KEY` on the upgrade, or a second offered subprotocol `bearer.KEY`
(browsers cannot set headers); a bad or missing key is closed with 1008 before any request is read.
Keep-alive: WebSocket ping frames every `keepalive_interval` seconds (hypercorn's
`websocket_ping_interval`, set by `server`); messages over `ws_max_message_bytes` close with 1009.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import trio

from trioproxy import framing
from trioproxy.auth import key_from_headers
from trioproxy.errors import ClientError, ProxyError, RateLimited, ServerShutdown
from trioproxy.record import Outcome, RequestRecord
from trioproxy.validate import validate_chat_request

if TYPE_CHECKING:
    from trioproxy.asgi import ProxyApp, Receive, Scope, Send
    from trioproxy.config_types import ClientKey
    from trioproxy.engine import Engine
    from trioproxy.translate.base import Chunk

__all__ = ["SUBPROTOCOL", "serve_websocket"]

logger = logging.getLogger("trioproxy")

SUBPROTOCOL = "trioproxy.v1"
BEARER_PREFIX = "bearer."
# RFC 6455 §7.4.1 close codes.
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
MAX_ID_LENGTH = 128


class _Socket:
    """One accepted WebSocket: serialised sends and the registry of requests in flight."""

    def __init__(self, app: ProxyApp, send: Send, key: ClientKey) -> None:
        self.app = app
        self.key = key
        self._send = send
        self._lock = trio.Lock()
        self.requests: dict[str, trio.CancelScope] = {}

    async def send_json(self, message: dict[str, Any]) -> None:
        text = framing.json_bytes(message).decode("utf-8")
        async with self._lock:
            await self._send({"type": "websocket.send", "text": text})

    async def send_error(self, request_id: str | None, exc: ProxyError) -> None:
        await self.send_json(
            {"type": "error", "id": request_id, "error": framing.error_body(exc)["error"]}
        )

    async def close(self, code: int, reason: str) -> None:
        async with self._lock:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


def _authenticate(app: ProxyApp, scope: Scope) -> tuple[ClientKey | None, str]:
    headers = list(scope.get("headers") or [])
    presented = key_from_headers(headers)
    for offered in scope.get("subprotocols") or []:
        if presented is None and offered.startswith(BEARER_PREFIX):
            presented = offered[len(BEARER_PREFIX) :]
    try:
        return app.auth.authenticate(presented), ""
    except ProxyError as exc:
        return None, exc.message


async def serve_websocket(app: ProxyApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one WebSocket connection until it closes."""
    if (await receive())["type"] != "websocket.connect":
        return
    if scope.get("path") != "/v1/ws":
        await send({"type": "websocket.close", "code": POLICY_VIOLATION})  # an HTTP 403
        return
    subprotocols = list(scope.get("subprotocols") or [])
    if SUBPROTOCOL not in subprotocols:
        await send({"type": "websocket.accept"})
        await send(
            {
                "type": "websocket.close",
                "code": PROTOCOL_ERROR,
                "reason": f"offer the subprotocol {SUBPROTOCOL}",
            }
        )
        return
    # Never echo a `bearer.KEY` subprotocol back: only ours is selected.
    await send({"type": "websocket.accept", "subprotocol": SUBPROTOCOL})
    key, why = _authenticate(app, scope)
    if key is None:
        await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": why[:120]})
        return
    socket = _Socket(app, send, key)
    with app.in_flight():
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as reader:

                async def stop_reading_on_shutdown() -> None:
                    await app.shutdown.expired.wait()
                    reader.cancel()

                nursery.start_soon(stop_reading_on_shutdown)
                await _read_loop(socket, receive, nursery)
            if not reader.cancelled_caught:
                nursery.cancel_scope.cancel()  # the client left: cancel every request on it
            # On shutdown, requests end themselves with a server_shutdown error (_run_request).
        if reader.cancelled_caught:
            with trio.move_on_after(1):
                await socket.close(GOING_AWAY, "server shutting down")


async def _read_loop(socket: _Socket, receive: Receive, nursery: trio.Nursery) -> None:
    limit = socket.app.config.proxy.ws_max_message_bytes
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message["type"] != "websocket.receive":
            continue
        text = message.get("text")
        if text is None:
            raw = message.get("bytes") or b""
            if len(raw) > limit:
                await socket.close(MESSAGE_TOO_BIG, f"messages are limited to {limit} bytes")
                return
            await socket.send_error(None, ClientError("send text frames holding JSON, not binary"))
            continue
        if len(text) > limit:  # hypercorn enforces this too; this covers other ASGI servers
            await socket.close(MESSAGE_TOO_BIG, f"messages are limited to {limit} bytes")
            return
        await _on_message(socket, text, nursery)


def _message_id(payload: dict[str, Any]) -> str | None:
    value = payload.get("id")
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH else None


async def _on_message(socket: _Socket, text: str, nursery: trio.Nursery) -> None:
    try:
        payload = json.loads(text)
    except ValueError:
        await socket.send_error(None, ClientError("message is not valid JSON"))
        return
    if not isinstance(payload, dict):
        await socket.send_error(None, ClientError("message must be a JSON object"))
        return
    request_id = _message_id(payload)
    kind = payload.get("type")
    if request_id is None:
        await socket.send_error(
            None,
            ClientError(
                f"message needs an 'id': a string of 1 to {MAX_ID_LENGTH} characters", param="id"
            ),
        )
        return
    if kind == "cancel":
        scope = socket.requests.get(request_id)
        if scope is None:
            await socket.send_error(
                request_id, ClientError(f"no request '{request_id}' is in flight", param="id")
            )
        else:
            scope.cancel()
        return
    if kind != "chat.completions.create":
        await socket.send_error(
            request_id,
            ClientError(
                "message 'type' must be 'chat.completions.create' or 'cancel'", param="type"
            ),
        )
        return
    if request_id in socket.requests:
        await socket.send_error(
            request_id, ClientError(f"a request '{request_id}' is already in flight", param="id")
        )
        return
    limit = socket.app.config.proxy.ws_max_in_flight
    if len(socket.requests) >= limit:
        await socket.send_error(
            request_id,
            RateLimited(
                f"at most {limit} requests may be in flight on one socket (ws_max_in_flight)"
            ),
        )
        return
    if socket.app.shutdown.draining.is_set():
        await socket.send_error(request_id, ServerShutdown("the server is shutting down"))
        return
    try:
        body = validate_chat_request(payload.get("body"), limits=socket.app.limits)
    except ProxyError as exc:
        if exc.param:
            exc.param = f"body.{exc.param}"
        await socket.send_error(request_id, exc)
        return
    body["stream"] = True
    try:
        socket.app.limiter.acquire(socket.key, trio.current_time())
    except ProxyError as exc:
        await socket.send_error(request_id, exc)
        return
    scope = trio.CancelScope()
    socket.requests[request_id] = scope
    nursery.start_soon(_run_request, socket, socket.app.engine, request_id, body, scope)


async def _run_request(
    socket: _Socket, engine: Engine, request_id: str, body: dict[str, Any], scope: trio.CancelScope
) -> None:
    record = RequestRecord(request_id=f"ws:{request_id}", started=trio.current_time(), stream=True)
    record.key_name, record.model = socket.key.name, body["model"]

    async def emit(chunks: list[Chunk]) -> None:
        for item in chunks:
            await socket.send_json({"type": "chunk", "id": request_id, "chunk": item})

    terminal: dict[str, Any] | ProxyError
    try:
        with scope:
            with (
                trio.CancelScope() as shutdown_scope,
                socket.app.shutdown.guard(shutdown_scope, record),
            ):
                try:
                    await engine.run_stream(body, socket.key, record, emit)
                    terminal = {"type": "done", "id": request_id}
                    record.outcome = Outcome.COMPLETED
                except ProxyError as exc:
                    terminal = exc
                    record.fail(exc)
            if shutdown_scope.cancelled_caught:
                terminal = ServerShutdown("the server shut down before this answer was complete")
                record.outcome = Outcome.SHUTDOWN
            if isinstance(terminal, ProxyError):
                await socket.send_error(request_id, terminal)
            else:
                await socket.send_json(terminal)
        if scope.cancelled_caught:
            record.outcome = Outcome.CLIENT_CANCELLED
            with trio.move_on_after(5):  # the socket may be gone; never hang on it
                await socket.send_json({"type": "cancelled", "id": request_id})
    finally:
        socket.app.limiter.release(socket.key)
        socket.requests.pop(request_id, None)
        socket.app.finish_request(record)
