"""The pipeline: one validated request in, chat-completion chunks (or one completion) out.

Stage: the orchestration at the IO edge. `Engine.run_stream` reads top to bottom like DESIGN.md's
data flow: route -> (for each upstream, with retries) translate -> upstream request -> SSE decode ->
translate back -> `emit(chunks)`. The three faces (SSE in `asgi`, WebSocket in `websocket`, the
in-process API in `embed`) call it inside their own nursery, beside a disconnect watcher, a
keep-alive ticker and a shutdown watcher; cancelling that nursery closes the upstream connection
(the HTTP client closes it forcefully when its context exits by cancellation).

Invariants:
- Retries and failover happen only before the first chunk was emitted: after that, the client has
  seen part of an answer and a second attempt would repeat or contradict it.
- A client fault (`ClientError`) is never retried and never reaches a second upstream.
- Everything the engine raises on purpose is a `ProxyError`; the faces render it.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from trioproxy.errors import ProxyError, UpstreamError, UpstreamUnavailable
from trioproxy.routing import Router
from trioproxy.sse import SSEDecoder
from trioproxy.translate.accumulate import CompletionAccumulator
from trioproxy.translate.demo import DemoReply
from trioproxy.upstream import HTTPClient, PoolLimits, Response, Timeouts, TLSOptions

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from contextlib import AbstractAsyncContextManager

    from trioproxy.config_types import ClientKey, ProxyConfig, UpstreamConfig
    from trioproxy.record import RequestRecord
    from trioproxy.routing import Candidate
    from trioproxy.translate.base import Chunk, Dialect, StreamMeta, UpstreamRequest

    Emit = Callable[[list[Chunk]], Awaitable[None]]

__all__ = ["Engine"]

logger = logging.getLogger("trioproxy")

# Upstream error bodies are short JSON; a megabyte is plenty and bounds what a broken upstream can
# make us hold. Non-streaming answers can be long (a 64k-token answer is ~300 KB of JSON).
MAX_ERROR_BODY = 1 << 20
MAX_RESPONSE_BODY = 32 << 20
BACKOFF_BASE = 0.5  # seconds; doubled per attempt, as the OpenAI SDKs do (0.5 s -> 8 s)
BACKOFF_MAX = 8.0


def new_completion_id() -> str:
    return "chatcmpl-" + secrets.token_urlsafe(18)


def make_dialect(upstream: UpstreamConfig) -> Dialect | None:
    # Imported here so that a daemon serving only some upstream types loads only their translators.
    match upstream.type:
        case "anthropic":
            from trioproxy.translate.anthropic import AnthropicDialect

            return AnthropicDialect(
                version=upstream.anthropic_version, beta=upstream.anthropic_beta
            )
        case "openai-responses":
            from trioproxy.translate.responses import ResponsesDialect

            return ResponsesDialect()
        case "openai-chat":
            from trioproxy.translate.chat import ChatDialect

            return ChatDialect()
        case _:
            return None  # demo


def _is_json(headers: tuple[tuple[str, str], ...]) -> bool:
    return any(name == "content-type" and "json" in value for name, value in headers)


@dataclass(frozen=True, slots=True)
class _CallOptions:
    """What every request to one upstream passes to the HTTP client, made once per config."""

    base_url: str
    timeouts: Timeouts
    tls: TLSOptions
    pool: PoolLimits

    @classmethod
    def of(cls, upstream: UpstreamConfig) -> _CallOptions:
        return cls(
            base_url=upstream.base_url.rstrip("/"),
            timeouts=Timeouts(
                connect=upstream.connect_timeout,
                first_byte=upstream.first_byte_timeout,
                read=upstream.read_timeout,
                total=upstream.total_timeout,
            ),
            tls=TLSOptions(verify=upstream.verify_tls, ca_file=upstream.ca_file),
            pool=PoolLimits(
                max_idle=upstream.max_idle_connections, idle_expiry=upstream.idle_expiry
            ),
        )


class Engine:
    """The pipeline for one configuration generation (a reload builds a new one)."""

    def __init__(self, config: ProxyConfig, http: HTTPClient) -> None:
        self.config = config
        self.router = Router(config)
        self._http = http
        self._dialects = {
            name: dialect
            for name, upstream in config.upstreams.items()
            if (dialect := make_dialect(upstream)) is not None
        }
        self._call_options = {
            name: _CallOptions.of(config.upstreams[name]) for name in self._dialects
        }

    def meta(self, body: dict[str, Any]) -> StreamMeta:
        from trioproxy.translate.base import StreamMeta

        options = body.get("stream_options") or {}
        return StreamMeta(
            completion_id=new_completion_id(),
            created=int(time.time()),
            model=body["model"],
            include_usage=bool(options.get("include_usage")),
        )

    # -- streaming -----------------------------------------------------------------------------

    async def run_stream(
        self, body: dict[str, Any], key: ClientKey, record: RequestRecord, emit: Emit
    ) -> None:
        """Stream the answer to `body` through `emit`; raise `ProxyError` on failure.

        Before the first `emit`, upstream failures are retried and failed over; after it, they
        propagate at once (the face turns them into the error chunk).
        """
        route = self.router.route(body["model"], key)
        meta = self.meta(body)
        emitted = False

        async def emit_once_started(chunks: list[Chunk]) -> None:
            nonlocal emitted
            if not emitted:
                emitted = True
                record.first_byte = trio.current_time()
            await emit(chunks)

        async def attempt(candidate: Candidate) -> None:
            await self._stream_from(candidate, body, meta, record, emit_once_started)

        await self._with_failover(route.candidates, record, attempt, lambda: emitted)

    async def _stream_from(
        self,
        candidate: Candidate,
        body: dict[str, Any],
        meta: StreamMeta,
        record: RequestRecord,
        emit: Emit,
    ) -> None:
        upstream = candidate.upstream
        if upstream.type == "demo":
            reply = DemoReply(body, meta)
            for index, chunks in enumerate(reply.chunks()):
                if index:
                    await trio.sleep(upstream.demo_delay)
                await emit(chunks)
            record.usage = reply.usage
            return
        dialect = self._dialects[upstream.name]
        request = dialect.build_request(body, candidate.target)
        async with self._open(upstream, dialect, request, record) as resp:
            if not 200 <= resp.status < 300:
                raw = await resp.aread(MAX_ERROR_BODY)
                raise dialect.translate_error(resp.status, resp.headers, raw)
            if _is_json(resp.headers):
                # Some OpenAI-compatible servers answer a streaming request with a JSON error
                # and status 200; never relay that as an empty success (MAPPING.md H.5).
                raw = await resp.aread(MAX_ERROR_BODY)
                raise dialect.translate_error(502, resp.headers, raw)
            decoder = SSEDecoder()
            translator = dialect.stream_translator(meta)
            try:
                async for data in resp.aiter_bytes():
                    # Everything one read brings goes out in one write: a busy upstream sends
                    # many events per read, and each client write costs a syscall and a trip
                    # through hypercorn (bench/: most of the per-chunk CPU is IO, not translation).
                    batch: list[Chunk] = []
                    failure: ProxyError | None = None
                    try:
                        for event in decoder.feed(data):
                            if translator.done:
                                break  # anything after the terminal event is ignored
                            batch += translator.feed(event)
                    except ProxyError as exc:
                        failure = exc  # send what came before it first, as it arrived
                    if batch:
                        await emit(batch)
                    if failure is not None:
                        raise failure
                    if translator.done:
                        break
                if not translator.done:
                    for event in decoder.finish():
                        if chunks := translator.feed(event):
                            await emit(chunks)
                    if chunks := translator.finish():
                        await emit(chunks)
            finally:
                record.usage = translator.usage

    # -- non-streaming -------------------------------------------------------------------------

    async def run_complete(
        self, body: dict[str, Any], key: ClientKey, record: RequestRecord
    ) -> dict[str, Any]:
        """The non-streaming answer to `body`; raises `ProxyError`."""
        route = self.router.route(body["model"], key)
        meta = self.meta(body)
        result: dict[str, Any] = {}

        async def attempt(candidate: Candidate) -> None:
            nonlocal result
            result = await self._complete_from(candidate, body, meta, record)

        await self._with_failover(route.candidates, record, attempt, lambda: False)
        record.first_byte = trio.current_time()
        return result

    async def _complete_from(
        self, candidate: Candidate, body: dict[str, Any], meta: StreamMeta, record: RequestRecord
    ) -> dict[str, Any]:
        upstream = candidate.upstream
        if upstream.type == "demo":
            reply = DemoReply(body, meta)
            acc = CompletionAccumulator()
            for chunks in reply.chunks():
                for item in chunks:
                    acc.feed(item)
            record.usage = reply.usage
            completion = acc.result()
            completion["usage"] = reply.usage
            return completion
        dialect = self._dialects[upstream.name]
        request = dialect.build_request(body, candidate.target)
        async with self._open(upstream, dialect, request, record) as resp:
            if not 200 <= resp.status < 300:
                raw = await resp.aread(MAX_ERROR_BODY)
                raise dialect.translate_error(resp.status, resp.headers, raw)
            raw = await resp.aread(MAX_RESPONSE_BODY)
        completion = dialect.translate_response(raw, meta)
        usage = completion.get("usage")
        record.usage = usage if isinstance(usage, dict) else None
        return completion

    # -- shared --------------------------------------------------------------------------------

    def _open(
        self,
        upstream: UpstreamConfig,
        dialect: Dialect,
        request: UpstreamRequest,
        record: RequestRecord,
    ) -> AbstractAsyncContextManager[Response]:
        forwarded = [
            (name, value)
            for name, value in record.client_headers
            if name in upstream.forward_headers
        ]
        headers = [
            ("accept", "text/event-stream, application/json"),
            *request.headers,
            *forwarded,
            *upstream.extra_headers,
            *dialect.auth_headers(upstream.api_key),
        ]
        if not any(name == "content-type" for name, _ in request.headers):
            headers.insert(0, ("content-type", "application/json"))
        options = self._call_options[upstream.name]
        return self._http.stream(
            "POST",
            options.base_url + request.path,
            headers=headers,
            body=request.body,
            timeouts=options.timeouts,
            tls=options.tls,
            proxy=upstream.https_proxy,
            pool=options.pool,
        )

    async def _with_failover(
        self,
        candidates: tuple[Candidate, ...],
        record: RequestRecord,
        attempt: Callable[[Candidate], Awaitable[None]],
        started: Callable[[], bool],
    ) -> None:
        """Try each candidate in order, retrying retryable upstream errors with backoff.

        Honours `retry-after` / `retry-after-ms` within the upstream's `retry_max_wait` budget;
        a wait longer than what is left of the budget moves on to the next upstream instead.
        """
        last: ProxyError | None = None
        for candidate in candidates:
            upstream = candidate.upstream
            record.upstream = upstream.name
            budget = upstream.retry_max_wait
            tries = 0
            while True:
                try:
                    await attempt(candidate)
                    return
                except UpstreamError as exc:
                    record.attempts.append(f"{upstream.name}:{exc.status}")
                    if started() or not exc.retryable:
                        raise
                    last = exc
                    delay = self._backoff(tries, exc)
                    if tries >= upstream.max_retries or delay > budget:
                        logger.info(
                            "upstream %s failed (%s); trying the next upstream if any",
                            upstream.name,
                            exc.message,
                        )
                        break
                    tries += 1
                    record.retries += 1
                    budget -= delay
                    logger.info(
                        "upstream %s failed (%s); retry %d in %.2fs",
                        upstream.name,
                        exc.message,
                        tries,
                        delay,
                    )
                    await trio.sleep(delay)
        if last is None:  # pragma: no cover - routing never returns an empty candidate list
            raise UpstreamUnavailable("no upstream could be tried")
        raise last

    @staticmethod
    def _backoff(tries: int, exc: UpstreamError) -> float:
        asked = getattr(exc, "retry_after", None)
        if isinstance(asked, float):
            return asked
        # Full jitter keeps many clients that failed together from retrying together.
        return random.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2**tries))
