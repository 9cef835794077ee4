"""The ASGI adapter: the HTTP and WebSocket faces as one ASGI 3 application.

Stage: the IO edge, for ASGI servers. `trioproxy.asgi_app(config)` gives an app that any
trio-mode ASGI server can mount (it uses trio primitives); `[proxy] server = hypercorn` serves it
with hypercorn for TLS and HTTP/2. The faces are the same as under our own server: this module
only turns ASGI messages into an `Exchange` (HTTP) or a `Handshake` (WebSocket).

ASGI has no write deadline and reports a client that left on `receive()`, not from `send()`
(hypercorn#210: never poll `receive()`): so every body `send` here has `write_timeout` (a stalled
HTTP/2 stream waits on flow control inside it), and a task blocked on `receive()` waits for
`http.disconnect`. Lifespan is answered in full before returning (an app that returns from
lifespan early crashes hypercorn's trio worker at start-up).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from trioproxy.errors import ClientError, RequestTooLarge
from trioproxy.faces import http as http_face
from trioproxy.faces import websocket as ws_face
from trioproxy.service import Runtime
from trioproxy.upstream import HTTPClient

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    from trioproxy.config_types import ProxyConfig

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]

__all__ = ["ASGIApp", "asgi_app"]

logger = logging.getLogger("trioproxy")

# Seconds the last message of a response may take: it is shielded (see `_Exchange._deliver`), so
# it gets a short deadline of its own, within the shutdown grace.
LAST_SEND_TIMEOUT = 1.0


class _Timeout(ClientError):
    status_hint = 408  # RFC 9110 §15.5.9
    code_hint = "request_timeout"


class ASGIApp:
    """trioproxy as an ASGI 3 application (for trio-mode servers).

    Args:
        runtime: the shared state; `runtime.service` is the configuration in use.
        owns_http: close `runtime.http` at lifespan shutdown (set by `asgi_app`).
    """

    def __init__(self, runtime: Runtime, *, owns_http: bool = False) -> None:
        self.runtime = runtime
        self._owns_http = owns_http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("http_version") == "2" and not self._http2():
            # hypercorn accepts HTTP/2 cleartext (h2c) whatever ALPN says; refuse it unless
            # `http2 = true` (see hypercorn_server.hypercorn_config for why).
            await _refuse_http2(send)
        elif scope["type"] == "http":
            await http_face.serve_request(
                self.runtime, _Exchange(self.runtime, scope, receive, send)
            )
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    def _http2(self) -> bool:
        return self.runtime.service.config.proxy.http2

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        if scope.get("path") != ws_face.PATH:
            await send({"type": "websocket.close", "code": 1008})  # an HTTP 403
            return
        handshake = _Handshake(scope, receive, send)
        with self.runtime.connection():
            await ws_face.serve_socket(self.runtime, handshake)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._owns_http:
                    with trio.CancelScope(shield=True):
                        await self.runtime.http.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _refuse_http2(send: Send) -> None:
    body = (
        b'{"error":{"message":"HTTP/2 is off on this server (http2 = false); use HTTP/1.1",'
        b'"type":"invalid_request_error","param":null,"code":"http_version_not_supported"}}'
    )
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 505, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def asgi_app(config: ProxyConfig) -> ASGIApp:
    """An ASGI application serving `config`, for any trio-mode ASGI server to mount.

    It owns its upstream HTTP client and closes it at lifespan shutdown.

    Example:
        app = trioproxy.asgi_app(trioproxy.load_config("proxy.ini"))
        await hypercorn.trio.serve(app, hypercorn_config)
    """
    return ASGIApp(Runtime(config, HTTPClient()), owns_http=True)


class _Exchange:
    """One ASGI HTTP request, as the HTTP face's `Exchange`."""

    def __init__(self, runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
        self._settings = runtime.service.config.proxy
        self._receive = receive
        self._send = send
        self.method = scope["method"]
        self.path = scope["path"]
        self.headers: list[tuple[bytes, bytes]] = [
            (bytes(name).lower(), bytes(value)) for name, value in scope.get("headers") or []
        ]
        self._gone = False
        self._watching: trio.CancelScope | None = None
        self._disconnected = False

    async def read_body(self, limit: int) -> bytes:
        for name, value in self.headers:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise RequestTooLarge(
                    f"request body is larger than {limit} bytes (max_body_bytes)", param=None
                )
        timeout = self._settings.body_timeout
        body = bytearray()
        while True:
            with trio.move_on_after(timeout) as waited:
                message = await self._receive()
            if waited.cancelled_caught:
                raise _Timeout(f"the request body stalled for {timeout:g}s (body_timeout)")
            if message["type"] == "http.disconnect":
                self._disconnected = True
                raise http_face.ClientGone
            body += message.get("body", b"")
            if len(body) > limit:
                raise RequestTooLarge(
                    f"request body is larger than {limit} bytes (max_body_bytes)", param=None
                )
            if not message.get("more_body", False):
                return bytes(body)

    async def _deliver(self, message: Message, *, last: bool = False) -> None:
        if self._gone:
            return
        done = False
        try:
            # The last message of a response is shielded from the face's cancel scope: the
            # server may close the connection inside this very `send` (hypercorn does, for
            # HTTP/1.0 and `Connection: close`), and tells our disconnect watcher that the
            # stream ended meanwhile; a cancel then would skip the close and leave the client
            # waiting for a FIN. Its own deadline still bounds it.
            with (
                trio.CancelScope(shield=last),
                trio.move_on_after(LAST_SEND_TIMEOUT if last else self._settings.write_timeout),
            ):
                await self._send(message)
                done = True
        finally:
            if not done:
                self._gone = True
                if self._watching is not None:
                    self._watching.cancel()

    async def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        await self._deliver({"type": "http.response.start", "status": status, "headers": headers})
        await self._deliver(
            {"type": "http.response.body", "body": body, "more_body": False}, last=True
        )

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await self._deliver({"type": "http.response.start", "status": status, "headers": headers})

    async def send(self, data: bytes) -> None:
        await self._deliver({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self) -> None:
        await self._deliver(
            {"type": "http.response.body", "body": b"", "more_body": False}, last=True
        )

    async def wait_disconnect(self) -> None:
        with trio.CancelScope() as self._watching:
            if self._gone or self._disconnected:
                return
            while (await self._receive())["type"] != "http.disconnect":
                pass
            self._disconnected = True


class _Handshake:
    """An ASGI `websocket.connect`, as the WebSocket face's `Handshake`."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.headers: list[tuple[bytes, bytes]] = [
            (bytes(name).lower(), bytes(value)) for name, value in scope.get("headers") or []
        ]
        self.subprotocols = list(scope.get("subprotocols") or [])
        self._receive = receive
        self._send = send

    async def accept(self, subprotocol: str | None) -> _Socket:
        message: Message = {"type": "websocket.accept"}
        if subprotocol is not None:
            message["subprotocol"] = subprotocol
        await self._send(message)
        return _Socket(self._receive, self._send)


class _Socket:
    """An accepted ASGI WebSocket, as the WebSocket face's `MessageSocket`."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._lock = trio.Lock()
        self._closed = False

    async def get_message(self) -> str | bytes:
        while not self._closed:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                self._closed = True
            elif message["type"] == "websocket.receive":
                text = message.get("text")
                return text if text is not None else bytes(message.get("bytes") or b"")
        raise ws_face.SocketClosed

    async def send_message(self, message: str) -> None:
        async with self._lock:
            if self._closed:
                raise ws_face.SocketClosed
            await self._send({"type": "websocket.send", "text": message})

    async def ping(self) -> None:
        # ASGI has no ping: the server pings on its own (hypercorn's websocket_ping_interval).
        await trio.lowlevel.checkpoint()

    async def aclose(self, code: int, reason: str) -> None:
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
