"""Embedding: run trioproxy inside a Trio application, and call its pipeline without HTTP.

Stage: the third face on the one pipeline (beside SSE and WebSocket). `open_proxy(config)` serves
HTTP (unless told not to) in a nursery it owns and gives a `Proxy` whose `chat()` yields the same
chunk dicts the SSE face would send, and raises the `ProxyError` the SSE face would render.

Invariants: every stream runs in its own cancel scope inside the proxy's nursery; leaving the
`async for` early (break, exception, `aclose()`) cancels that stream's upstream request; leaving
`open_proxy` cancels everything still running, and a consumer still reading then gets
`ServerShutdown` rather than a stream that looks complete.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from trioproxy.asgi import ProxyApp
from trioproxy.auth import ANONYMOUS
from trioproxy.errors import ProxyError, ServerShutdown
from trioproxy.record import Outcome, RequestRecord
from trioproxy.server import serve
from trioproxy.translate.base import Chunk
from trioproxy.upstream import HTTPClient
from trioproxy.validate import parse_json_body, validate_chat_request

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from trioproxy.config_types import ClientKey, ProxyConfig

__all__ = ["Proxy", "ProxyStatistics", "open_proxy"]


@dataclass(frozen=True, slots=True)
class ProxyStatistics:
    active_streams: int  # HTTP SSE streams being served
    in_process_streams: int  # `chat()` streams being read
    requests: int  # requests finished since start, every face
    pooled_connections: int  # idle upstream connections kept for reuse


class Proxy:
    """A running trioproxy. Get one from `open_proxy`."""

    def __init__(self, app: ProxyApp, urls: list[str], nursery: trio.Nursery) -> None:
        self.app = app
        self.urls = urls
        self._nursery = nursery
        self._in_process = 0
        self._finished = 0
        app.on_finish.append(self._count)
        self._closed = False

    def _count(self, record: RequestRecord) -> None:
        self._finished += 1

    @property
    def url(self) -> str:
        """The first URL the HTTP server is bound to, e.g. `http://127.0.0.1:8003`."""
        if not self.urls:
            raise RuntimeError("this proxy serves no HTTP (open_proxy(serve_http=False))")
        return self.urls[0]

    def _validate(self, body: dict[str, Any] | bytes) -> dict[str, Any]:
        proxy = self.app.config.proxy
        raw = body if isinstance(body, bytes) else None
        parsed = parse_json_body(raw, max_depth=proxy.max_json_depth) if raw is not None else body
        return validate_chat_request(parsed, limits=self.app.limits)

    async def chat(
        self, body: dict[str, Any] | bytes, *, key: ClientKey = ANONYMOUS
    ) -> AsyncIterator[Chunk]:
        """Stream the answer to a chat completion request as `chat.completion.chunk` dicts.

        Args:
            body: the request, as for `POST /v1/chat/completions` (`stream` is implied).
            key: whose limits and model permissions apply (the in-process caller is trusted).

        Raises:
            ProxyError: the subclass the HTTP face would answer with (e.g. `UnknownModel`,
                `UpstreamStatusError`); raised before the first chunk or mid-stream.

        Example:
            async for chunk in proxy.chat({"model": "demo", "messages": [...]}):
                print(chunk["choices"][0]["delta"].get("content", ""), end="")
        """
        validated = self._validate(body)
        validated["stream"] = True
        engine = self.app.engine
        record = RequestRecord(request_id="inproc", started=trio.current_time(), stream=True)
        record.key_name, record.model = key.name, validated["model"]
        send, receive = trio.open_memory_channel[Chunk | ProxyError](0)
        scope = trio.CancelScope()
        finished = False

        async def emit(chunks: list[Chunk]) -> None:
            for item in chunks:
                await send.send(item)

        async def produce() -> None:
            nonlocal finished
            with scope:
                async with send:
                    try:
                        await engine.run_stream(validated, key, record, emit)
                        record.outcome = Outcome.COMPLETED
                    except ProxyError as exc:
                        record.fail(exc)
                        await send.send(exc)
                    finished = True
            if record.outcome is None:
                record.outcome = Outcome.CLIENT_CANCELLED
            self.app.finish_request(record)

        self._nursery.start_soon(produce)
        self._in_process += 1
        try:
            async with receive:
                async for item in receive:
                    if isinstance(item, ProxyError):
                        raise item
                    yield item
            if not finished:
                raise ServerShutdown("the proxy was closed while this stream was running")
        finally:
            self._in_process -= 1
            scope.cancel()

    async def complete(
        self, body: dict[str, Any] | bytes, *, key: ClientKey = ANONYMOUS
    ) -> dict[str, Any]:
        """The non-streaming answer (`chat.completion` dict) to a chat completion request.

        Raises:
            ProxyError: as `chat()` does.
        """
        validated = self._validate(body)
        validated["stream"] = False
        record = RequestRecord(request_id="inproc", started=trio.current_time())
        record.key_name, record.model = key.name, validated["model"]
        try:
            result = await self.app.engine.run_complete(validated, key, record)
        except ProxyError as exc:
            record.fail(exc)
            raise
        else:
            record.outcome = Outcome.COMPLETED
            return result
        finally:
            self.app.finish_request(record)

    def statistics(self) -> ProxyStatistics:
        return ProxyStatistics(
            active_streams=self.app.active_streams,
            in_process_streams=self._in_process,
            requests=self._finished,
            pooled_connections=self.app.http.statistics().idle,
        )


@contextlib.asynccontextmanager
async def open_proxy(config: ProxyConfig, *, serve_http: bool = True) -> AsyncIterator[Proxy]:
    """Run trioproxy for the duration of an `async with` block.

    Args:
        config: from `load_config`. `listen = 127.0.0.1:0` picks a free port (see `Proxy.url`).
        serve_http: also serve HTTP (and WebSocket) at `Proxy.url`; False for in-process use only.

    Example:
        async with trioproxy.open_proxy(config) as proxy:
            hello = [{"role": "user", "content": "hi"}]
            body = await proxy.complete({"model": "demo", "messages": hello})
    """
    http = HTTPClient()
    app = ProxyApp(config, http)
    try:
        async with trio.open_nursery() as nursery:
            urls: list[str] = []
            if serve_http:
                urls = await nursery.start(partial(serve, config, app=app))
            yield Proxy(app, urls, nursery)
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await http.aclose()
