"""The WebSocket face (`GET /v1/ws`): chat streams multiplexed on one socket, on the one pump.

Stage: the IO edge facing WebSocket clients (DESIGN.md "WebSocket streaming", docs/websocket.md).
A server hands this face a `Handshake` (trio-websocket's server side under our h11 server, or the
ASGI adapter); once accepted, a `MessageSocket`. One nursery per socket holds the reader loop, a
ping task, a drain watcher and one task per request; each request runs `pump.handle` in its own
cancel scope, so a `cancel` message, an error, or the in-flight limit touches one request only,
and closing the socket cancels them all (and so closes their upstream connections).

Protocol `trioproxy.v1` (text frames, one JSON object each):
  client: {"type": "chat.completions.create", "id": "c1", "body": {...}}
          {"type": "cancel", "id": "c1"}
  server: {"type": "chunk", "id", "chunk"} ... then exactly one of
          {"type": "done", "id"} | {"type": "error", "id", "error"} | {"type": "cancelled", "id"}
A malformed message gets an `error` with `"id": null` (or its id, when readable); the socket stays.
Auth: `Authorization: Bearer KEY` on the upgrade, or a second offered subprotocol `bearer.KEY`
(browsers cannot set headers); a bad or missing key is closed with 1008 before any request is read.
Shutdown: an idle socket is closed with 1001 as soon as draining starts; a busy one once its
requests have ended (at the latest when the drain expires and the pump ends them).
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any, Protocol

import trio

from trioproxy import framing, pump
from trioproxy.auth import key_from_headers
from trioproxy.errors import ClientError, ProxyError, RateLimited, ServerShutdown
from trioproxy.record import RequestRecord
from trioproxy.validate import validate_chat_request

if TYPE_CHECKING:
    from trioproxy.config_types import ClientKey
    from trioproxy.service import Runtime, Service
    from trioproxy.translate.base import Chunk

__all__ = ["PATH", "SUBPROTOCOL", "Handshake", "MessageSocket", "SocketClosed", "serve_socket"]

logger = logging.getLogger("trioproxy")

PATH = "/v1/ws"
SUBPROTOCOL = "trioproxy.v1"
BEARER_PREFIX = "bearer."
# RFC 6455 §7.4.1 close codes.
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
MAX_ID_LENGTH = 128


class SocketClosed(Exception):
    """The WebSocket is closed (by either side); nothing more can be read or sent."""


class MessageSocket(Protocol):
    """An accepted WebSocket, as a server hands it to this face."""

    async def get_message(self) -> str | bytes:
        """The next whole message; raises `SocketClosed`."""

    async def send_message(self, message: str) -> None:
        """Send one text message; raises `SocketClosed`."""

    async def ping(self) -> None:
        """Ping and wait for the pong (a server that pings on its own may return at once)."""

    async def aclose(self, code: int, reason: str) -> None:
        """Close with `code` (the closing handshake, bounded); idempotent."""


class Handshake(Protocol):
    """An upgrade request on the WebSocket path, not yet accepted."""

    headers: list[tuple[bytes, bytes]]  # names lower-case
    subprotocols: list[str]

    async def accept(self, subprotocol: str | None) -> MessageSocket:
        """Complete the opening handshake, selecting `subprotocol`."""


def _authenticate(service: Service, handshake: Handshake) -> tuple[ClientKey | None, str]:
    presented = key_from_headers(handshake.headers)
    for offered in handshake.subprotocols:
        if presented is None and offered.startswith(BEARER_PREFIX):
            presented = offered[len(BEARER_PREFIX) :]
    try:
        return service.authenticate(presented), ""
    except ProxyError as exc:
        return None, exc.message


async def serve_socket(runtime: Runtime, handshake: Handshake) -> None:
    """Serve one WebSocket connection until it closes."""
    service = runtime.service
    if SUBPROTOCOL not in handshake.subprotocols:
        socket = await handshake.accept(None)
        await socket.aclose(PROTOCOL_ERROR, f"offer the subprotocol {SUBPROTOCOL}")
        return
    # Never echo a `bearer.KEY` subprotocol back: only ours is selected.
    socket = await handshake.accept(SUBPROTOCOL)
    key, why = _authenticate(service, handshake)
    if key is None:
        await socket.aclose(POLICY_VIOLATION, why[:120])
        return
    await _Session(service, socket, key).run()


class _Session:
    """One accepted, authenticated socket: its requests in flight and its tasks."""

    def __init__(self, service: Service, socket: MessageSocket, key: ClientKey) -> None:
        self.service = service
        self.socket = socket
        self.key = key
        self.requests: dict[str, trio.CancelScope] = {}
        self._idle = trio.Event()
        self._idle.set()
        self._scope: trio.CancelScope | None = None

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.socket.send_message(framing.json_bytes(message).decode("utf-8"))

    async def send_error(self, request_id: str | None, exc: ProxyError) -> None:
        await self.send_json(
            {"type": "error", "id": request_id, "error": framing.error_body(exc)["error"]}
        )

    def gone(self) -> None:
        """The socket closed under a writer: end the session (the reader sees it too)."""
        if self._scope is not None:
            self._scope.cancel()

    async def run(self) -> None:
        close: tuple[int, str] | None = None
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            nursery.start_soon(self._ping, nursery.cancel_scope)
            nursery.start_soon(self._close_when_drained, nursery.cancel_scope)
            with contextlib.suppress(SocketClosed):
                close = await self._read_loop(nursery)
            nursery.cancel_scope.cancel()  # the client left: cancel every request on it
        if close is not None:
            with trio.move_on_after(1):
                await self.socket.aclose(*close)

    async def _ping(self, scope: trio.CancelScope) -> None:
        interval = self.service.config.proxy.keepalive_interval
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(interval) as waited:
                await self.socket.ping()
            if waited.cancelled_caught:
                logger.info("a WebSocket client answered no ping for %.0fs; closing it", interval)
                with trio.move_on_after(1):
                    await self.socket.aclose(GOING_AWAY, "no pong")
                scope.cancel()
                return

    async def _close_when_drained(self, scope: trio.CancelScope) -> None:
        await self.service.lifecycle.draining.wait()
        while self.requests:  # the pump ends them, at the latest when the drain expires
            await self._idle.wait()
        with trio.move_on_after(1):
            await self.socket.aclose(GOING_AWAY, "server shutting down")
        scope.cancel()

    async def _read_loop(self, nursery: trio.Nursery) -> tuple[int, str] | None:
        limit = self.service.config.proxy.ws_max_message_bytes
        while True:
            message = await self.socket.get_message()
            if len(message) > limit:  # trio-websocket enforces it too; this covers ASGI servers
                return MESSAGE_TOO_BIG, f"messages are limited to {limit} bytes"
            if isinstance(message, bytes):
                await self.send_error(
                    None, ClientError("send text frames holding JSON, not binary")
                )
                continue
            await self._on_message(message, nursery)

    async def _on_message(self, text: str, nursery: trio.Nursery) -> None:
        try:
            payload = json.loads(text)
        except ValueError:
            await self.send_error(None, ClientError("message is not valid JSON"))
            return
        if not isinstance(payload, dict):
            await self.send_error(None, ClientError("message must be a JSON object"))
            return
        value = payload.get("id")
        request_id = value if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH else None
        kind = payload.get("type")
        if request_id is None:
            await self.send_error(
                None,
                ClientError(
                    f"message needs an 'id': a string of 1 to {MAX_ID_LENGTH} characters",
                    param="id",
                ),
            )
            return
        if kind == "cancel":
            scope = self.requests.get(request_id)
            if scope is None:
                await self.send_error(
                    request_id, ClientError(f"no request '{request_id}' is in flight", param="id")
                )
            else:
                scope.cancel()
            return
        if kind != "chat.completions.create":
            await self.send_error(
                request_id,
                ClientError(
                    "message 'type' must be 'chat.completions.create' or 'cancel'", param="type"
                ),
            )
            return
        if request_id in self.requests:
            await self.send_error(
                request_id,
                ClientError(f"a request '{request_id}' is already in flight", param="id"),
            )
            return
        limit = self.service.config.proxy.ws_max_in_flight
        if len(self.requests) >= limit:
            await self.send_error(
                request_id,
                RateLimited(
                    f"at most {limit} requests may be in flight on one socket (ws_max_in_flight)"
                ),
            )
            return
        if self.service.lifecycle.draining.is_set():
            await self.send_error(request_id, ServerShutdown("the server is shutting down"))
            return
        try:
            body = validate_chat_request(payload.get("body"), limits=self.service.limits)
        except ProxyError as exc:
            if exc.param:
                exc.param = f"body.{exc.param}"
            await self.send_error(request_id, exc)
            return
        body["stream"] = True
        scope = trio.CancelScope()
        self.requests[request_id] = scope
        self._idle = trio.Event()
        nursery.start_soon(self._run_request, request_id, body, scope)

    async def _run_request(
        self, request_id: str, body: dict[str, Any], scope: trio.CancelScope
    ) -> None:
        record = RequestRecord(request_id=f"ws:{request_id}", started=trio.current_time())
        try:
            with scope:
                await pump.handle(self.service, body, self.key, record, _Sink(self, request_id))
            if scope.cancelled_caught:  # a `cancel` message, not the socket closing
                with trio.move_on_after(5):  # the socket may be gone; never hang on it
                    await self.send_json({"type": "cancelled", "id": request_id})
        except SocketClosed:
            pass  # the reader sees it too and ends the session
        finally:
            self.requests.pop(request_id, None)
            if not self.requests:
                self._idle.set()


class _Sink:
    """One request's answer as `chunk` messages, then `done` or `error`.

    A socket that closes under a write ends the session (and with it this request) instead of
    raising through the pump: the reader task sees the close as well.
    """

    def __init__(self, session: _Session, request_id: str) -> None:
        self._session = session
        self._id = request_id

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            await self._session.send_json(message)
        except SocketClosed:
            self._session.gone()

    async def commit(self) -> None:
        pass  # the socket is open already

    async def send_chunks(self, chunks: list[Chunk]) -> None:
        for item in chunks:
            await self._send({"type": "chunk", "id": self._id, "chunk": item})

    async def keepalive(self) -> None:
        pass  # WebSocket pings keep the connection warm

    async def finish(self) -> None:
        await self._send({"type": "done", "id": self._id})

    async def complete(self, completion: dict[str, Any]) -> None:  # pragma: no cover
        raise AssertionError("WebSocket requests always stream")

    async def fail(self, error: ProxyError, *, committed: bool) -> None:
        await self._send(
            {"type": "error", "id": self._id, "error": framing.error_body(error)["error"]}
        )
