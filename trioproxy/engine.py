"""The pipeline: one validated request in, chat-completion chunks (or one completion) out.

Stage: the orchestration at the IO edge. `Engine.run_stream` reads top to bottom like DESIGN.md's
data flow: route -> (for each upstream, with retries) translate -> upstream request -> SSE decode ->
translate back -> `emit(chunks)`. The pump calls it inside the face's nursery, beside a
disconnect watcher, a keep-alive ticker and a shutdown watcher; cancelling that nursery closes
the upstream connection (the HTTP client closes it forcefully when its context exits by
cancellation).

Invariants:
- `on_accept()` is called once, when an upstream answered with a success status and an event
  stream, before its first event is read, and nothing is emitted before it: the face holds its
  response headers (and its keep-alive comments) until then (docs/streaming.md, the commitment
  rule).
- Retries and failover happen only before the first chunk was emitted: after that, the client has
  seen part of an answer and a second attempt would repeat or contradict it.
- No wait is longer than what is left of the upstream's `retry_max_wait`: a longer
  `retry-after` moves on to the next candidate, or reaches the client with the upstream's status.
  Every retry and every give-up is logged and recorded with its reason (`RequestRecord`).
- A client fault (`ClientError`) is never retried and never reaches a second upstream.
- The client sees one request id, the proxy's: the upstream's is kept in
  `RequestRecord.upstream_request_id`, never passed on as an error header.
- Everything the engine raises on purpose is a `ProxyError`; the faces render it.
- Every upstream request carries a key leased from the upstream's pool (routing/pool.py) and
  holds it to its end (a stream keeps its key). A failure that is the key's (429, quota, 401 /
  403: routing/health.py) cools or disables that key and the request moves to another key at
  once, before the first byte, without waiting or spending `max_retries`; a failure that is the
  upstream's counts against its circuit breaker, and the router skips an upstream whose breaker
  is open. When every key is cooling down the client gets 429 with `retry-after` = the soonest
  key's remaining cool-down.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import logging
import math
import random
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from trioproxy.errors import (
    ProxyError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamUnavailable,
)
from trioproxy.logs import log_value
from trioproxy.routing import Route, Router
from trioproxy.routing.health import KEY_FAILURES, Failure, KeyState, classify
from trioproxy.routing.pool import KeyPools, Lease, NoKey
from trioproxy.sse import SSEDecoder
from trioproxy.translate.accumulate import CompletionAccumulator
from trioproxy.translate.demo import DemoReply
from trioproxy.translate.relay import RelayWatch, relay_request, relay_usage
from trioproxy.upstream import HTTPClient, PoolLimits, Response, Timeouts, TLSOptions

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from contextlib import AbstractAsyncContextManager

    from trioproxy.config_types import ClientKey, ProxyConfig, UpstreamConfig, UpstreamKey
    from trioproxy.metrics import Metrics
    from trioproxy.record import RequestRecord
    from trioproxy.routing import Candidate
    from trioproxy.sse import SSEEvent
    from trioproxy.translate.base import Chunk, Dialect, StreamMeta, UpstreamRequest
    from trioproxy.translate.relay import Passthrough

    Emit = Callable[[list[Chunk]], Awaitable[None]]
    EmitEvents = Callable[[list[SSEEvent]], Awaitable[None]]

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
    """The pipeline for one configuration generation (a reload builds a new one).

    Args:
        config: the configuration.
        http: the upstream HTTP client.
        pools: the key pools and upstream health, shared by every generation (the `Runtime`
            keeps one, configured with the current config); a private one when None.
        metrics: where per-key counters go (`trioproxy_upstream_key_*`), or None.
        clock: the pools' clock, in seconds (a store shared by several instances converts
            its times to and from it: store/health.py).
        jitter: a number in [0, 1) per call, for the cool-down's jitter.
    """

    def __init__(
        self,
        config: ProxyConfig,
        http: HTTPClient,
        pools: KeyPools | None = None,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = trio.current_time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.router = Router(config)
        self._http = http
        if pools is None:
            pools = KeyPools()
            pools.configure(config)
        self.pools = pools
        self._metrics = metrics
        self._clock = clock
        self._jitter = jitter
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
            # The answer side checks that a json_object request got a JSON object back.
            json_object=isinstance(response_format := body.get("response_format"), dict)
            and response_format.get("type") == "json_object",
        )

    # -- streaming -----------------------------------------------------------------------------

    async def run_stream(
        self,
        body: dict[str, Any],
        key: ClientKey,
        record: RequestRecord,
        emit: Emit,
        *,
        on_accept: Callable[[], None] | None = None,
        passthrough: Passthrough | None = None,
        emit_events: EmitEvents | None = None,
    ) -> None:
        """Stream the answer to `body` through `emit`; raise `ProxyError` on failure.

        With `passthrough` (and `emit_events`), a candidate upstream of the client's own dialect
        gets the client's request unchanged but for the model, and its events go, unchanged, to
        `emit_events` instead of being translated to chunks (translate/relay.py). Other
        candidates are translated from `body` as usual.

        `on_accept()` is called once, when the first upstream answers with a success status and
        an event stream (before its first event is read; for the demo upstream, right before
        its first chunk): the face may commit its response headers from then on, never before
        (docs/streaming.md "When the headers are sent"). Nothing is emitted before it.

        Before the first `emit`, upstream failures are retried and failed over; after it, they
        propagate at once (the face turns them into the error chunk).
        """
        route = self.route(body["model"], key)
        meta = self.meta(body)
        emitted = False
        accepted = False

        def accept() -> None:
            nonlocal accepted
            if not accepted:
                accepted = True
                if on_accept is not None:
                    on_accept()

        async def emit_once_started(chunks: list[Chunk]) -> None:
            nonlocal emitted
            if not emitted:
                emitted = True
                accept()  # a no-op unless a path forgot to accept first
                record.first_byte = trio.current_time()
            record.chunks += len(chunks)
            await emit(chunks)

        async def events_once_started(events: list[SSEEvent]) -> None:
            nonlocal emitted
            if not emitted:
                emitted = True
                record.first_byte = trio.current_time()
            record.chunks += len(events)
            assert emit_events is not None
            await emit_events(events)

        async def attempt(candidate: Candidate, key: UpstreamKey | None) -> None:
            if passthrough is not None and candidate.upstream.type == passthrough.dialect:
                await self._relay_from(
                    candidate, key, passthrough, record, events_once_started, accept
                )
            else:
                record.relayed = False  # a failover from a relaying candidate
                await self._stream_from(
                    candidate, key, body, meta, record, emit_once_started, accept
                )

        await self._with_failover(route.candidates, record, attempt, lambda: emitted)

    async def _relay_from(
        self,
        candidate: Candidate,
        key: UpstreamKey | None,
        passthrough: Passthrough,
        record: RequestRecord,
        emit: EmitEvents,
        accept: Callable[[], None],
    ) -> None:
        upstream = candidate.upstream
        dialect = self._dialects[upstream.name]
        request = self._relay_request(candidate, passthrough)
        record.relayed = True
        async with self._open(upstream, key, dialect, request, record) as resp:
            await _check_event_stream(resp, dialect, record)
            accept()
            decoder = SSEDecoder()
            watch = RelayWatch(passthrough.dialect)
            try:
                async for data in resp.aiter_bytes():
                    batch: list[SSEEvent] = []
                    for event in decoder.feed(data):
                        if watch.done:
                            break  # anything after the terminal event is ignored
                        watch.feed(event)
                        batch.append(event)
                    if batch:
                        await emit(batch)
                    if watch.done:
                        break
                if not watch.done:
                    if rest := decoder.finish():
                        for event in rest:
                            watch.feed(event)
                        await emit(rest)
                    watch.finish()
            finally:
                record.usage = watch.usage

    def _relay_request(self, candidate: Candidate, passthrough: Passthrough) -> UpstreamRequest:
        from trioproxy.translate.anthropic import MESSAGES_PATH
        from trioproxy.translate.responses import RESPONSES_PATH

        upstream = candidate.upstream
        if upstream.type == "anthropic":
            base: tuple[tuple[str, str], ...] = (("anthropic-version", upstream.anthropic_version),)
            if upstream.anthropic_beta:
                base += (("anthropic-beta", ",".join(upstream.anthropic_beta)),)
            return relay_request(
                passthrough, candidate.target, path=MESSAGES_PATH, base_headers=base
            )
        return relay_request(passthrough, candidate.target, path=RESPONSES_PATH, base_headers=())

    async def _stream_from(
        self,
        candidate: Candidate,
        key: UpstreamKey | None,
        body: dict[str, Any],
        meta: StreamMeta,
        record: RequestRecord,
        emit: Emit,
        accept: Callable[[], None],
    ) -> None:
        upstream = candidate.upstream
        meta = _reported(meta, candidate)
        if upstream.type == "demo":
            reply = DemoReply(body, meta)
            for index, chunks in enumerate(reply.chunks()):
                if index:
                    await trio.sleep(upstream.demo_delay)
                else:
                    accept()
                await emit(chunks)
            record.usage = reply.usage
            return
        dialect = self._dialects[upstream.name]
        request = dialect.build_request(body, candidate.target)
        async with self._open(upstream, key, dialect, request, record) as resp:
            await _check_event_stream(resp, dialect, record)
            accept()
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
        self,
        body: dict[str, Any],
        key: ClientKey,
        record: RequestRecord,
        *,
        passthrough: Passthrough | None = None,
    ) -> dict[str, Any]:
        """The non-streaming answer to `body`; raises `ProxyError`.

        With `passthrough`, a candidate of the client's own dialect answers with its own body,
        returned unchanged, and `record.relayed` says so; otherwise a `chat.completion`.
        """
        route = self.route(body["model"], key)
        meta = self.meta(body)
        result: dict[str, Any] = {}

        async def attempt(candidate: Candidate, key: UpstreamKey | None) -> None:
            nonlocal result
            if passthrough is not None and candidate.upstream.type == passthrough.dialect:
                result = await self._relay_complete(candidate, key, passthrough, record)
            else:
                record.relayed = False
                result = await self._complete_from(candidate, key, body, meta, record)

        await self._with_failover(route.candidates, record, attempt, lambda: False)
        record.first_byte = trio.current_time()
        return result

    async def _complete_from(
        self,
        candidate: Candidate,
        key: UpstreamKey | None,
        body: dict[str, Any],
        meta: StreamMeta,
        record: RequestRecord,
    ) -> dict[str, Any]:
        upstream = candidate.upstream
        meta = _reported(meta, candidate)
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
        async with self._open(upstream, key, dialect, request, record) as resp:
            await _check_status(resp, dialect, record)
            raw = await resp.aread(MAX_RESPONSE_BODY)
        completion = dialect.translate_response(raw, meta)
        usage = completion.get("usage")
        record.usage = usage if isinstance(usage, dict) else None
        return completion

    async def _relay_complete(
        self,
        candidate: Candidate,
        key: UpstreamKey | None,
        passthrough: Passthrough,
        record: RequestRecord,
    ) -> dict[str, Any]:
        answer = await self._relay_json(
            candidate, key, self._relay_request(candidate, passthrough), record
        )
        usage = answer.get("usage")
        record.usage = relay_usage(usage) if isinstance(usage, dict) else None
        return answer

    async def relay_count_tokens(
        self, candidate: Candidate, passthrough: Passthrough, record: RequestRecord
    ) -> dict[str, Any]:
        """Anthropic's `POST /v1/messages/count_tokens` on `candidate`, an Anthropic upstream
        (https://docs.anthropic.com/en/api/messages-count-tokens): the client's body with the
        routed model (and the model's `system_prompt` default; `max_tokens` is no field of that
        endpoint, so its default is not added), the upstream's key, the client's version and
        beta headers. One try, no retry or failover (a count is cheap to ask again). Returns the
        upstream's JSON answer unchanged; raises its error translated (`ProxyError`).
        """
        from trioproxy.translate.from_anthropic_count import COUNT_TOKENS_PATH

        defaults = dataclasses.replace(candidate.target.defaults, max_tokens=None)
        candidate = dataclasses.replace(
            candidate, target=dataclasses.replace(candidate.target, defaults=defaults)
        )
        request = self._relay_request(candidate, passthrough)
        request = dataclasses.replace(request, path=COUNT_TOKENS_PATH, stream=False)
        record.upstream = candidate.upstream.name
        async with self._one_key(candidate.upstream, record) as key:
            return await self._relay_json(candidate, key, request, record)

    async def _relay_json(
        self,
        candidate: Candidate,
        key: UpstreamKey | None,
        request: UpstreamRequest,
        record: RequestRecord,
    ) -> dict[str, Any]:
        """POST a relayed `request` and return the upstream's JSON object answer unchanged."""
        upstream = candidate.upstream
        dialect = self._dialects[upstream.name]
        record.relayed = True
        async with self._open(upstream, key, dialect, request, record) as resp:
            await _check_status(resp, dialect, record)
            raw = await resp.aread(MAX_RESPONSE_BODY)
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise UpstreamProtocolError("the upstream's answer is not a JSON object")
        return answer

    # -- shared --------------------------------------------------------------------------------

    def _open(
        self,
        upstream: UpstreamConfig,
        key: UpstreamKey | None,
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
            *dialect.auth_headers(key.key if key is not None else upstream.api_key),
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

    def route(self, model: str, key: ClientKey | None) -> Route:
        """The candidates for `model`: upstreams whose breaker is open left out, and those of a
        `strategy = weighted` model put in this request's order (routing/pool.py)."""
        now = self._clock()
        route = self.router.route(
            model, key, blocked=self.pools.blocked(self.config.upstreams, now)
        )
        if route.weights is not None and len(route.candidates) > 1:
            order = self.pools.order(
                route.section, [c.upstream for c in route.candidates], route.weights
            )
            route = dataclasses.replace(route, candidates=tuple(route.candidates[i] for i in order))
        return route

    async def _with_failover(
        self,
        candidates: tuple[Candidate, ...],
        record: RequestRecord,
        attempt: Callable[[Candidate, UpstreamKey | None], Awaitable[None]],
        started: Callable[[], bool],
    ) -> None:
        """Try each candidate in order, with a key from its pool, retrying retryable upstream
        errors with backoff.

        A failure that is the key's (429, quota, 401/403) is retried at once on another key of
        the same upstream, without a wait and without spending `max_retries`. Every wait comes
        out of the upstream's `retry_max_wait` budget, and no wait is longer than what is left
        of it: a `retry-after` / `retry-after-ms` (or a key's cool-down) beyond it is not slept,
        the next candidate is tried at once, and when none is left the last upstream error is
        raised with its headers (`retry-after` = the soonest key's cool-down, `x-should-retry`),
        so the client's SDK makes the decision (docs/streaming.md "Retries and failover").
        Every retry and every give-up is logged (logger `trioproxy`, info) and recorded with its
        reason for the metrics.
        """
        last: ProxyError | None = None
        soonest = math.inf  # seconds until a cooling key or an open breaker lets a request by
        for candidate in candidates:
            upstream = candidate.upstream
            record.upstream = upstream.name
            budget = upstream.retry_max_wait
            tries = 0
            tried: set[str] = set()  # ids of keys that failed this request
            key_failure: UpstreamError | None = None  # the last of those failures
            switch_from: str | None = None  # the label of a key that just failed
            keyless = upstream.type == "demo"
            while True:
                now = self._clock()
                if not keyless and (wait := self.pools.admit(upstream, now)) is not None:
                    soonest = min(soonest, wait)
                    last = last or _breaker_open(upstream.name, wait)
                    self._give_up(record, upstream.name, GiveUp.CIRCUIT_OPEN, last)
                    break
                lease: Lease | None = None
                if not keyless:
                    got = self.pools.acquire(upstream, now, tried)
                    if isinstance(got, NoKey):
                        failure = key_failure or _no_key(upstream.name, got)
                        if got.retry_in is not None:
                            soonest = min(soonest, got.retry_in)
                        delay, giveup = self._key_wait(tries, got, failure, budget, upstream)
                        if giveup is not None:
                            last = failure
                            self._give_up(record, upstream.name, giveup, failure)
                            break
                        tries += 1
                        budget -= delay
                        tried.clear()
                        switch_from = None
                        reason = _reason(key_failure) if key_failure else "keys_cooling"
                        self._retry(record, upstream.name, tries, delay, reason, failure)
                        await trio.sleep(delay)
                        continue
                    lease = got
                    record.upstream_key = got.key.label
                    if switch_from is not None and key_failure is not None:
                        record.retries += 1
                        record.retry_reasons.append((upstream.name, _reason(key_failure)))
                        logger.info(
                            "request %s: retry of upstream %s at once on key %s (%s) after key "
                            "%s answered %s",
                            log_value(record.request_id),
                            upstream.name,
                            got.key.label,
                            _reason(key_failure),
                            switch_from,
                            _describe(key_failure),
                        )
                        switch_from = None
                try:
                    await attempt(candidate, lease.key if lease is not None else None)
                except UpstreamError as exc:
                    record.attempts.append(f"{upstream.name}:{exc.status}")
                    last = exc
                    kind = classify(exc)
                    if not keyless:
                        self._note(upstream, lease, kind, exc)
                    if lease is not None and kind in KEY_FAILURES and not started():
                        # The key's fault (its cool-down is set): another key, at once.
                        tried.add(lease.key.id)
                        key_failure = exc
                        switch_from = lease.key.label
                        continue
                    delay, giveup = self._next_wait(tries, exc, budget, upstream, started())
                    if giveup is not None:
                        self._give_up(record, upstream.name, giveup, exc)
                        if giveup in _FINAL:
                            raise
                        break
                    tries += 1
                    budget -= delay
                    self._retry(record, upstream.name, tries, delay, _reason(exc), exc)
                    await trio.sleep(delay)
                else:
                    if not keyless:
                        self._note(upstream, lease, None, None)
                    return
                finally:
                    if lease is not None:
                        self.pools.release(lease)
        if last is None:  # pragma: no cover - routing never returns an empty candidate list
            raise UpstreamUnavailable("no upstream could be tried")
        raise _for_client(last, soonest)

    def _retry(
        self,
        record: RequestRecord,
        upstream: str,
        tries: int,
        delay: float,
        reason: str,
        exc: ProxyError,
    ) -> None:
        record.retries += 1
        record.retry_reasons.append((upstream, reason))
        logger.info(
            "request %s: retry %d of upstream %s in %.2fs (%s) after %s",
            log_value(record.request_id),
            tries,
            upstream,
            delay,
            reason,
            _describe(exc),
        )

    @staticmethod
    def _give_up(record: RequestRecord, upstream: str, giveup: GiveUp, exc: ProxyError) -> None:
        record.giveups.append((upstream, giveup.value))
        logger.info(
            "request %s: giving up on upstream %s (%s) after %s",
            log_value(record.request_id),
            upstream,
            giveup.value,
            _describe(exc),
        )

    @staticmethod
    def _key_wait(
        tries: int, got: NoKey, failure: ProxyError, budget: float, upstream: UpstreamConfig
    ) -> tuple[float, GiveUp | None]:
        """The wait for a key of `upstream` to come back from its cool-down, or why not to."""
        if got.retry_in is None:
            return 0.0, GiveUp.KEYS_DISABLED
        if _header(failure, "x-should-retry") == "false":
            return 0.0, GiveUp.SHOULD_NOT_RETRY
        if tries >= upstream.max_retries:
            return 0.0, GiveUp.RETRIES_EXHAUSTED
        if got.retry_in > budget:
            return 0.0, GiveUp.RETRY_AFTER_TOO_LONG
        return got.retry_in, None

    def _note(
        self,
        upstream: UpstreamConfig,
        lease: Lease | None,
        failure: Failure | None,
        exc: UpstreamError | None,
    ) -> None:
        """Tell the pool how an answer went; log and count what changed."""
        retry_after = exc.retry_after if isinstance(exc, UpstreamStatusError) else None
        key = lease.key if lease is not None else None
        outcome = self.pools.report(
            upstream,
            key,
            failure,
            now=self._clock(),
            retry_after=retry_after,
            jitter=self._jitter(),
        )
        name = upstream.name
        metrics = self._metrics
        if key is not None and metrics is not None:
            result = failure.value if failure is not None else "ok"
            metrics.count(
                "trioproxy_upstream_key_requests_total",
                (("upstream", name), ("key", key.label), ("result", result)),
                "Upstream answers by upstream, key label and result (ok or whose fault).",
            )
        if outcome.breaker_opened:
            logger.warning(
                "upstream %s: circuit breaker open for %gs after %d failures in a row; "
                "its models skip it until a probe request succeeds",
                name,
                upstream.breaker_open,
                upstream.breaker_failures,
            )
            if metrics is not None:
                metrics.count(
                    "trioproxy_upstream_breaker_opens_total",
                    (("upstream", name),),
                    "Times an upstream's circuit breaker opened.",
                )
        if key is None or not outcome.changed or failure is None or exc is None:
            return
        if metrics is not None and outcome.key_state is not KeyState.READY:
            metrics.count(
                "trioproxy_upstream_key_cooldowns_total",
                (("upstream", name), ("key", key.label), ("reason", failure.value)),
                "Keys cooled down or disabled, by upstream, key label and reason.",
            )
        if outcome.key_state is KeyState.DISABLED:
            logger.error(
                "upstream %s: key %s was refused (%s); it is disabled until the next reload",
                name,
                key.label,
                _describe(exc),
            )
        elif failure is Failure.QUOTA:
            logger.warning(
                "upstream %s: key %s is out of quota or credit (%s); cooling down for %.0fs",
                name,
                key.label,
                _describe(exc),
                outcome.cooldown,
            )
        elif outcome.key_state is KeyState.COOLING:
            logger.info(
                "upstream %s: key %s is rate limited; cooling down for %.2fs",
                name,
                key.label,
                outcome.cooldown,
            )

    @contextlib.asynccontextmanager
    async def _one_key(
        self, upstream: UpstreamConfig, record: RequestRecord
    ) -> AsyncIterator[UpstreamKey | None]:
        """A key of `upstream` for one try without failover (count_tokens); its answer is
        reported to the pool like any other."""
        if upstream.type == "demo":
            yield None
            return
        now = self._clock()
        if (wait := self.pools.admit(upstream, now)) is not None:
            raise _breaker_open(upstream.name, wait)
        got = self.pools.acquire(upstream, now, set())
        if isinstance(got, NoKey):
            raise _for_client(_no_key(upstream.name, got), got.retry_in or math.inf)
        record.upstream_key = got.key.label
        try:
            yield got.key
        except UpstreamError as exc:
            self._note(upstream, got, classify(exc), exc)
            raise _for_client(exc, math.inf) from None
        else:
            self._note(upstream, got, None, None)
        finally:
            self.pools.release(got)

    @staticmethod
    def _next_wait(
        tries: int, exc: UpstreamError, budget: float, upstream: UpstreamConfig, started: bool
    ) -> tuple[float, GiveUp | None]:
        """The wait before retrying `exc` on the same upstream, or why not to retry it."""
        if started:
            return 0.0, GiveUp.STREAM_STARTED
        if not exc.retryable:
            return 0.0, GiveUp.NOT_RETRYABLE
        if _header(exc, "x-should-retry") == "false":
            # The OpenAI and Anthropic SDKs obey this header before any status rule
            # (CLIENT_EXPECTATIONS.md §1.4); so does the proxy.
            return 0.0, GiveUp.SHOULD_NOT_RETRY
        if tries >= upstream.max_retries:
            return 0.0, GiveUp.RETRIES_EXHAUSTED
        asked = getattr(exc, "retry_after", None)
        if isinstance(asked, float):
            if asked > budget:
                return 0.0, GiveUp.RETRY_AFTER_TOO_LONG
            return asked, None
        # Full jitter keeps many clients that failed together from retrying together.
        delay = random.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2**tries))
        if delay > budget:
            return 0.0, GiveUp.BUDGET_EXHAUSTED
        return delay, None


class GiveUp(enum.Enum):
    """Why the engine stopped trying one upstream for one request (a metrics label)."""

    STREAM_STARTED = "stream_started"  # the client has part of an answer: never repeat it
    NOT_RETRYABLE = "not_retryable"  # a 4xx other than 408/409/429, a bad answer ...
    SHOULD_NOT_RETRY = "should_not_retry"  # the upstream sent `x-should-retry: false`
    RETRIES_EXHAUSTED = "retries_exhausted"  # `max_retries` retries were made
    RETRY_AFTER_TOO_LONG = "retry_after_too_long"  # `retry-after` beyond the budget's rest
    BUDGET_EXHAUSTED = "budget_exhausted"  # our own backoff would go beyond `retry_max_wait`
    CIRCUIT_OPEN = "circuit_open"  # its circuit breaker opened (routing/health.py)
    KEYS_DISABLED = "keys_disabled"  # every key was refused (401/403) until reload


# Give-ups that end the request: the failure is the client's answer, no other upstream is tried
# (a client fault would fail the same way anywhere; a started stream cannot restart).
_FINAL = frozenset({GiveUp.STREAM_STARTED, GiveUp.NOT_RETRYABLE})


def _reported(meta: StreamMeta, candidate: Candidate) -> StreamMeta:
    """`meta` for one candidate. The model every chunk and body reports is the one that
    answered: the upstream's own id when it names one (the translators take it from the
    upstream's answer, as OpenAI itself reports `gpt-4o-2024-08-06` for `gpt-4o`), else the
    upstream model trioproxy asked for (`upstream_model`, by default the name the client sent).
    docs/streaming.md "The model name"."""
    return dataclasses.replace(meta, model=candidate.target.upstream_model)


def _content_type(headers: tuple[tuple[str, str], ...]) -> str:
    """The media type of a response, lower-case without parameters; "" when absent."""
    for name, value in headers:
        if name == "content-type":
            return value.split(";", 1)[0].strip().lower()
    return ""


# Upstream request ids are opaque tokens (Anthropic `req_011C...`, OpenAI `req_5f3a...`); one
# that is not a short run of visible ASCII is dropped rather than passed on in a header.
_UPSTREAM_ID = re.compile(r"[\x21-\x7e]{1,200}")
_REQUEST_ID_HEADERS = ("request-id", "x-request-id")  # Anthropic's, OpenAI's


def upstream_request_id(headers: tuple[tuple[str, str], ...]) -> str | None:
    """The id the upstream gave its answer (`request-id` or `x-request-id`), or None."""
    for name, value in headers:
        if name in _REQUEST_ID_HEADERS and _UPSTREAM_ID.fullmatch(value):
            return value
    return None


async def _check_status(resp: Response, dialect: Dialect, record: RequestRecord) -> None:
    """Note the upstream's request id; raise the translated error for a non-2xx answer."""
    record.upstream_request_id = upstream_request_id(resp.headers)
    if not 200 <= resp.status < 300:
        raw = await resp.aread(MAX_ERROR_BODY)
        raise _without_request_id(dialect.translate_error(resp.status, resp.headers, raw))


async def _check_event_stream(resp: Response, dialect: Dialect, record: RequestRecord) -> None:
    """A streaming request's answer must be a success status and an event stream."""
    await _check_status(resp, dialect, record)
    kind = _content_type(resp.headers)
    if "json" in kind:
        # Some OpenAI-compatible servers answer a streaming request with a JSON error and
        # status 200; never relay that as an empty success (MAPPING.md H.5).
        raw = await resp.aread(MAX_ERROR_BODY)
        raise _without_request_id(dialect.translate_error(resp.status, resp.headers, raw))
    if kind and kind != "text/event-stream":
        raise UpstreamProtocolError(
            f"upstream answered a streaming request with {kind}, not text/event-stream"
        )


def _without_request_id(exc: Exception) -> Exception:
    """`exc` minus any request id header: the client gets one `x-request-id`, the proxy's own;
    the upstream's travels as `record.upstream_request_id` (`x-upstream-request-id`)."""
    if isinstance(exc, ProxyError):
        exc.headers = tuple(
            (name, value) for name, value in exc.headers if name not in _REQUEST_ID_HEADERS
        )
    return exc


def _header(exc: ProxyError, name: str) -> str | None:
    return next((value.strip().lower() for key, value in exc.headers if key == name), None)


def _reason(exc: UpstreamError) -> str:
    """A short, bounded label for a failure: its status (for an error event inside a 200
    stream, the status its type maps to, e.g. 529 for `overloaded_error`), else our code."""
    if isinstance(exc, UpstreamStatusError):
        return str(exc.status)
    return exc.code or type(exc).__name__


def _describe(exc: ProxyError) -> str:
    return f"{exc.status} {log_value(exc.message)}"


def _retry_after(seconds: float) -> str:
    """A `retry-after` value: whole seconds, rounded up, at least 1 (RFC 9110 §10.2.3)."""
    return str(max(1, math.ceil(seconds)))


def _breaker_open(upstream: str, wait: float) -> UpstreamUnavailable:
    return UpstreamUnavailable(
        f"upstream '{upstream}' is failing: its circuit breaker is open for {wait:.0f} s more",
        code="upstream_circuit_open",
        headers=(("retry-after", _retry_after(wait)),),
    )


def _no_key(upstream: str, got: NoKey) -> UpstreamUnavailable:
    """The error for an upstream none of whose keys may be used now."""
    if got.retry_in is None:
        return UpstreamUnavailable(
            f"upstream '{upstream}' refused every one of its keys (401/403); they are disabled "
            "until the proxy's configuration is reloaded",
            code="upstream_keys_disabled",
        )
    return UpstreamUnavailable(
        f"every key of upstream '{upstream}' is cooling down after rate limits or quota "
        f"errors; the first is ready in {got.retry_in:.1f} s",
        status=429,
        error_type="rate_limit_error",
        code="rate_limit_exceeded",
        headers=(("retry-after", _retry_after(got.retry_in)),),
    )


def _for_client(exc: ProxyError, soonest: float) -> ProxyError:
    """The error the client gets when no candidate answered: a key refused by the upstream is
    the proxy operator's problem, not the client's (503, never the upstream's 401, which the
    client's SDK would take for its own key being wrong); a 429 says when the soonest key or
    upstream is ready again (`soonest`, seconds)."""
    if classify(exc) is Failure.AUTH and exc.status in (401, 403):
        return UpstreamUnavailable(
            f"the upstream refused the proxy's key ({_describe(exc)}); the proxy's operator must "
            "fix its api_key",
            code="upstream_key_refused",
        )
    if exc.status == 429 and soonest != math.inf:
        value = _retry_after(soonest)
        names = {name for name, _ in exc.headers}
        headers = [
            (name, value if name == "retry-after" else str(math.ceil(soonest * 1000)))
            if name in ("retry-after", "retry-after-ms")
            else (name, header)
            for name, header in exc.headers
        ]
        if "retry-after" not in names:  # the header every client knows (RFC 9110 §10.2.3)
            headers.append(("retry-after", value))
        exc.headers = tuple(headers)
    return exc
