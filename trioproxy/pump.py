"""The pump: the one path every request takes, whatever face it came through.

Stage: the IO edge between the faces and the engine (DESIGN.md "The data flow"). A face parses
its dialect, authenticates the caller, then calls `handle(service, body, caller, record, sink)`;
the pump does the rest, once for every face: admission (draining, the caller's limits), the
in-flight count and the shutdown registry, the engine, the commitment rule, outcome
classification, and the request's record (access log, metrics).

What differs between faces is only the `Sink` and what cancels the scope around `handle()`: the
face owns its transport, and its disconnect watcher cancels that scope (the engine's upstream
connection closes with it).

Commitment (DESIGN.md "The chat stream"): nothing is written to the client until an upstream has
accepted the request (`on_accept`, a success status). Then the response is committed at the first
chunk, or once `keepalive_interval` passes after the acceptance with no chunk, whichever comes
first; after that, keep-alives fill silences. Every failure before commitment reaches
`sink.fail(..., committed=False)`, which answers with a real status; after it, with an error in
the stream. Every request ends with exactly one terminal call: `finish`, `complete` or `fail`.
"""

from __future__ import annotations

import heapq
import logging
import math
from typing import TYPE_CHECKING, Any, Protocol, cast

import trio

from trioproxy.errors import ProxyError, ServerShutdown
from trioproxy.limits import tokens_used
from trioproxy.record import Outcome
from trioproxy.translate.from_anthropic_count import estimate_input_tokens

if TYPE_CHECKING:
    from trioproxy.config_types import ClientKey
    from trioproxy.engine import Engine
    from trioproxy.record import RequestRecord
    from trioproxy.service import Service
    from trioproxy.sse import SSEEvent
    from trioproxy.translate.base import Chunk
    from trioproxy.translate.relay import Passthrough

__all__ = ["KeepAlives", "RelaySink", "Sink", "handle"]

logger = logging.getLogger("trioproxy")


class Sink(Protocol):
    """Where one request's answer goes. Each face has its own; the pump drives it."""

    async def commit(self) -> None:
        """The answer starts (HTTP: the 200 and its headers). Called at most once, first."""

    async def send_chunks(self, chunks: list[Chunk]) -> None:
        """Chat completion chunks, in order (streaming requests)."""

    async def keepalive(self) -> None:
        """The upstream is silent; keep the client's connection warm (after `commit`)."""

    async def finish(self) -> None:
        """The stream ended cleanly (after its last chunk). May raise `ProxyError` when the
        face finds the answer wanting; the pump then calls `fail` instead."""

    async def complete(self, completion: dict[str, Any]) -> None:
        """The whole answer of a non-streaming request. May raise `ProxyError` before writing
        anything; the pump then calls `fail`."""

    async def fail(self, error: ProxyError, *, committed: bool) -> None:
        """The request failed: a status if not `committed`, else an error in the stream."""


class RelaySink(Sink, Protocol):
    """A sink that can also take an upstream's own events (same dialect in and up)."""

    async def send_events(self, events: list[SSEEvent]) -> None:
        """Upstream events, unchanged and in order (a pass-through stream)."""


async def handle(
    service: Service,
    body: dict[str, Any],
    caller: ClientKey,
    record: RequestRecord,
    sink: Sink,
    *,
    passthrough: Passthrough | None = None,
) -> None:
    """Run one validated chat request (`body`) for `caller` into `sink`.

    With `passthrough` (the client's own request, for upstreams of its dialect), `sink` must be
    a `RelaySink`; a relayed non-streaming answer reaches `sink.complete` in the upstream's own
    shape, with `record.relayed` set.

    Never raises `ProxyError` (failures go to the sink); cancellation from the face's scope
    propagates. The request's record is finished (logged, counted) when this returns.
    """
    stream = bool(body.get("stream"))
    record.stream = stream
    record.model = body["model"]
    record.key_name = caller.name
    lifecycle = service.lifecycle
    try:
        try:
            if lifecycle.draining.is_set():
                raise ServerShutdown("the server is shutting down; retry on another instance")
            lease = await service.limiter.admit(caller, trio.current_time())
        except ProxyError as exc:
            record.fail(exc)
            await sink.fail(exc, committed=False)
            return
        try:
            with lifecycle.admitted(stream=stream):
                await _run(service, body, caller, record, sink, stream, passthrough)
        finally:
            lease.release(tokens_spent(record, body) if caller.tpm is not None else 0)
    finally:
        if record.outcome is None:  # cancelled by the face: the client left
            record.outcome = Outcome.CLIENT_CANCELLED
        service.finish(record)


async def _run(
    service: Service,
    body: dict[str, Any],
    caller: ClientKey,
    record: RequestRecord,
    sink: Sink,
    stream: bool,
    passthrough: Passthrough | None,
) -> None:
    engine = service.engine
    writer = (
        _StreamWriter(sink, service.config.proxy.keepalive_interval, service.lifecycle.keepalives)
        if stream
        else None
    )
    failure: ProxyError | None = None
    completion: dict[str, Any] = {}
    # Only shutdown cancels this scope (the registry); the face cancels the one around us.
    with trio.CancelScope() as engine_scope, service.lifecycle.guard(engine_scope, record):
        try:
            if writer is not None:
                await writer.run(engine, body, caller, record, passthrough)
            else:
                completion = await engine.run_complete(
                    body, caller, record, passthrough=passthrough
                )
        except ProxyError as exc:
            record.fail(exc)
            failure = exc
    if engine_scope.cancelled_caught:
        record.outcome = Outcome.SHUTDOWN
        failure = ServerShutdown("the server shut down before this answer was complete")
        record.error_code = failure.code
    if failure is None:
        try:
            # A sink may still find the answer wanting (a face translating it to its dialect:
            # a stream cut short, prose where JSON was asked for): then it is a failure too.
            if writer is not None:
                await writer.finish()
            else:
                await sink.complete(completion)
        except ProxyError as exc:
            record.fail(exc)
            failure = exc
        else:
            record.outcome = Outcome.COMPLETED
            return
    if writer is not None:
        await writer.fail(failure)
    else:
        await sink.fail(failure, committed=False)


def tokens_spent(record: RequestRecord, body: dict[str, Any]) -> int:
    """The tokens a request cost its key, for `tpm` (limits.py).

    The upstream's usage when it came. Without it (the client left, or the stream broke, before
    the usage chunk), an estimate, so that leaving early is no way around `tpm`: the prompt as
    `count_tokens` estimates it (translate/from_anthropic_count.py) plus one token per chunk
    sent, if the answer had begun, or if the request was with an upstream when it was cut off
    (the upstream may have read the prompt). Nothing for a request no upstream took: refused
    before it, or failed with an error status (which providers do not bill).
    """
    used = tokens_used(record.usage)
    if used is not None:
        return used
    began = record.first_byte is not None
    cut_off = record.outcome in _CUT_OFF and record.upstream != "-"
    if not (began or cut_off):
        return 0
    return estimate_input_tokens(body) + record.chunks


# Outcomes that leave a request's usage unknown though its upstream may have worked on it.
_CUT_OFF = frozenset({None, Outcome.CLIENT_CANCELLED, Outcome.TIMEOUT, Outcome.SHUTDOWN})


class KeepAlives:
    """One timer for the keep-alives of every stream of a runtime.

    A sleeping task per stream would cost each open stream about 2 KiB (bench/: 5,000 slow
    streams). Instead a heap holds each accepted stream's next due time (its last write plus
    `keepalive_interval`), and one task, started on first use in each trio run, wakes at the
    earliest. A stream that wrote meanwhile is pushed back to its new due time; a due one gets a
    short task that writes the keep-alive under the stream's lock, so that a client that does
    not read holds up only its own stream. Writing a chunk costs nothing here: the heap entry is
    checked when it comes due.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _StreamWriter]] = []
        self._serial = 0
        self._token: trio.lowlevel.TrioToken | None = None
        self._wake = trio.Event()

    def add(self, writer: _StreamWriter) -> None:
        token = trio.lowlevel.current_trio_token()
        if self._token is not token:  # first use in this trio run: start the timer task
            self._token = token
            self._heap.clear()
            self._wake = trio.Event()
            trio.lowlevel.spawn_system_task(self._run, name="trioproxy keep-alives")
        due = writer.due
        if not self._heap or due < self._heap[0][0]:
            self._wake.set()
        self._serial += 1
        heapq.heappush(self._heap, (due, self._serial, writer))

    async def _run(self) -> None:
        heap = self._heap
        async with trio.open_nursery() as nursery:
            while True:
                self._wake = trio.Event()
                with trio.move_on_at(heap[0][0] if heap else math.inf):
                    await self._wake.wait()
                now = trio.current_time()
                while heap and heap[0][0] <= now:
                    _, _, writer = heapq.heappop(heap)
                    if writer.closed:
                        continue
                    if writer.due > now:  # it wrote since: due later
                        self._serial += 1
                        heapq.heappush(heap, (writer.due, self._serial, writer))
                    else:
                        nursery.start_soon(writer.keepalive_due)


class _StreamWriter:
    """One stream's side of the commitment rule: commit once, keep-alive after acceptance.

    The engine (through `emit`) and the keep-alive timer share the sink under one lock.
    """

    __slots__ = (
        "_interval",
        "_keepalive_scope",
        "_keepalives",
        "_last_write",
        "_lock",
        "_sink",
        "closed",
        "committed",
    )

    def __init__(self, sink: Sink, interval: float, keepalives: KeepAlives) -> None:
        self._sink = sink
        self._interval = interval
        self._keepalives = keepalives
        self._keepalive_scope: trio.CancelScope | None = None
        self._lock = trio.Lock()
        self.committed = False
        self.closed = False  # the engine is done: no keep-alive any more
        self._last_write = 0.0

    @property
    def due(self) -> float:
        """When a keep-alive is due, if nothing is written before."""
        return self._last_write + self._interval

    async def run(
        self,
        engine: Engine,
        body: dict[str, Any],
        caller: ClientKey,
        record: RequestRecord,
        passthrough: Passthrough | None,
    ) -> None:
        try:
            await engine.run_stream(
                body,
                caller,
                record,
                self._emit,
                on_accept=self._on_accept,
                passthrough=passthrough,
                emit_events=self._emit_events if passthrough is not None else None,
            )
        finally:
            self.closed = True
            if self._keepalive_scope is not None:  # a keep-alive being written: stop it
                self._keepalive_scope.cancel()

    def _on_accept(self) -> None:
        self._last_write = trio.current_time()
        self._keepalives.add(self)

    async def _commit_once(self) -> None:
        if not self.committed:
            self.committed = True
            await self._sink.commit()

    async def _emit(self, chunks: list[Chunk]) -> None:
        if self._lock.locked():  # a keep-alive is being written: wait for it
            async with self._lock:
                await self._write(chunks)
            return
        # Free (nearly always): take it without `acquire()`'s scheduler round trip, which would
        # cost every chunk a pass through trio's run loop. The engine calls us right after an
        # upstream read, itself a checkpoint.
        self._lock.acquire_nowait()
        try:
            await self._write(chunks)
        finally:
            self._lock.release()

    async def _write(self, chunks: list[Chunk]) -> None:
        await self._commit_once()
        await self._sink.send_chunks(chunks)
        self._last_write = trio.current_time()

    async def _emit_events(self, events: list[SSEEvent]) -> None:
        async with self._lock:
            await self._commit_once()
            await cast("RelaySink", self._sink).send_events(events)
            self._last_write = trio.current_time()

    async def keepalive_due(self) -> None:
        """Write a keep-alive now if the stream is still silent (called by `KeepAlives`)."""
        with trio.CancelScope() as self._keepalive_scope:
            async with self._lock:
                if self.closed or trio.current_time() < self.due:
                    return
                try:
                    await self._commit_once()
                    await self._sink.keepalive()
                except Exception:  # runs in the timer's task: one stream's fault stays its own
                    logger.warning("a keep-alive write failed", exc_info=True)
                    self.closed = True
                    return
                self._last_write = trio.current_time()
        self._keepalive_scope = None
        if not self.closed:
            self._keepalives.add(self)

    async def finish(self) -> None:
        async with self._lock:
            await self._commit_once()
            await self._sink.finish()

    async def fail(self, error: ProxyError) -> None:
        async with self._lock:
            await self._sink.fail(error, committed=self.committed)
