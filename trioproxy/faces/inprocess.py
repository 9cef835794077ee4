"""The in-process face: a Trio application calls the pipeline directly, no HTTP.

Stage: a face like the others, on the one pump: the same admission (limits of the key passed
in), shutdown, records and metrics. `Proxy.chat()` yields the chunk dicts the SSE face would send
and raises the `ProxyError` the SSE face would render; `Proxy.complete()` returns the
`chat.completion` dict the JSON face would send.

Invariants: every stream runs in its own cancel scope inside the proxy's nursery; leaving the
`async for` early (break, exception, `aclose()`) cancels that stream's upstream request; closing
the proxy cancels everything still running, and a consumer still reading then gets
`ServerShutdown` rather than a stream that looks complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from trioproxy import pump
from trioproxy.auth import ANONYMOUS
from trioproxy.errors import ProxyError, ServerShutdown
from trioproxy.record import RequestRecord
from trioproxy.translate.base import Chunk
from trioproxy.validate import parse_json_body, validate_chat_request

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from trioproxy.config_types import ClientKey
    from trioproxy.service import Runtime

__all__ = ["Proxy", "ProxyStatistics"]


@dataclass(frozen=True, slots=True)
class ProxyStatistics:
    active_streams: int  # streaming requests being served, every face
    in_process_streams: int  # `chat()` streams being read
    requests: int  # requests finished since start, every face
    pooled_connections: int  # idle upstream connections kept for reuse


class Proxy:
    """A running trioproxy. Get one from `trioproxy.open_proxy`."""

    def __init__(self, runtime: Runtime, urls: list[str], nursery: trio.Nursery) -> None:
        self.runtime = runtime
        self.urls = urls
        self._nursery = nursery
        self._in_process = 0
        self._finished = 0
        runtime.on_finish.append(self._count)

    def _count(self, record: RequestRecord) -> None:
        self._finished += 1

    @property
    def url(self) -> str:
        """The first URL the HTTP server is bound to, e.g. `http://127.0.0.1:8003`."""
        if not self.urls:
            raise RuntimeError("this proxy serves no HTTP (open_proxy(serve_http=False))")
        return self.urls[0]

    def _validate(self, body: dict[str, Any] | bytes, *, stream: bool) -> dict[str, Any]:
        service = self.runtime.service
        settings = service.config.proxy
        parsed = (
            parse_json_body(body, max_depth=settings.max_json_depth)
            if isinstance(body, bytes)
            else body
        )
        validated = validate_chat_request(parsed, limits=service.limits)
        validated["stream"] = stream
        return validated

    async def chat(
        self, body: dict[str, Any] | bytes, *, key: ClientKey = ANONYMOUS
    ) -> AsyncIterator[Chunk]:
        """Stream the answer to a chat completion request as `chat.completion.chunk` dicts.

        Args:
            body: the request, as for `POST /v1/chat/completions` (`stream` is implied).
            key: whose limits and model permissions apply (the in-process caller is trusted).

        Raises:
            ProxyError: the subclass the HTTP face would answer with (e.g. `UnknownModel`,
                `UpstreamStatusError`, `RateLimited`); raised before the first chunk or
                mid-stream.

        Example:
            async for chunk in proxy.chat({"model": "demo", "messages": [...]}):
                print(chunk["choices"][0]["delta"].get("content", ""), end="")
        """
        validated = self._validate(body, stream=True)
        service = self.runtime.service
        send, receive = trio.open_memory_channel[Chunk | ProxyError | None](0)
        scope = trio.CancelScope()
        record = RequestRecord(request_id="inproc", started=trio.current_time())

        async def produce() -> None:
            with scope:
                async with send:
                    await pump.handle(service, validated, key, record, _ChannelSink(send, scope))

        self._nursery.start_soon(produce)
        self._in_process += 1
        finished = False
        try:
            async with receive:
                async for item in receive:
                    if item is None:
                        finished = True
                        break
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
        validated = self._validate(body, stream=False)
        record = RequestRecord(request_id="inproc", started=trio.current_time())
        sink = _ResultSink()
        await pump.handle(self.runtime.service, validated, key, record, sink)
        if sink.error is not None:
            raise sink.error
        return sink.completion

    def statistics(self) -> ProxyStatistics:
        return ProxyStatistics(
            active_streams=self.runtime.lifecycle.streams,
            in_process_streams=self._in_process,
            requests=self._finished,
            pooled_connections=self.runtime.http.statistics().idle,
        )


class _ChannelSink:
    """Chunks into a channel, then None for a clean end or the error; the reader raises it.

    A reader that went away (closed its end) cancels the stream's scope instead of raising
    through the pump.
    """

    def __init__(
        self, send: trio.MemorySendChannel[Chunk | ProxyError | None], scope: trio.CancelScope
    ) -> None:
        self._channel = send
        self._scope = scope

    async def _send(self, item: Chunk | ProxyError | None) -> None:
        try:
            await self._channel.send(item)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._scope.cancel()

    async def commit(self) -> None:
        pass  # no head to send: the caller's `async for` is already waiting for chunks

    async def send_chunks(self, chunks: list[Chunk]) -> None:
        for item in chunks:
            await self._send(item)

    async def keepalive(self) -> None:
        pass  # no connection to keep warm in-process

    async def finish(self) -> None:
        await self._send(None)

    async def complete(self, completion: dict[str, Any]) -> None:  # pragma: no cover
        raise AssertionError("chat() always streams")

    async def fail(self, error: ProxyError, *, committed: bool) -> None:
        await self._send(error)


class _ResultSink:
    """The answer of `complete()`, kept for the caller."""

    def __init__(self) -> None:
        self.completion: dict[str, Any] = {}
        self.error: ProxyError | None = None

    async def commit(self) -> None:  # pragma: no cover - non-streaming
        pass

    async def send_chunks(self, chunks: list[Chunk]) -> None:  # pragma: no cover
        raise AssertionError("complete() does not stream")

    async def keepalive(self) -> None:  # pragma: no cover
        pass

    async def finish(self) -> None:  # pragma: no cover
        pass

    async def complete(self, completion: dict[str, Any]) -> None:
        self.completion = completion

    async def fail(self, error: ProxyError, *, committed: bool) -> None:
        self.error = error
