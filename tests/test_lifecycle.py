"""Shutdown and resources, black-box (issue 16, "Shutdown and resources, as tests").

The daemon runs as a subprocess (`python -m trioproxy --config FILE`) and receives real signals;
its descriptor table is read from /proc and its in-flight gauge from /metrics. One test drives
`trioproxy.serve` in-process with a `shutdown_trigger`. Clients are raw sockets, trio-websocket,
and fake upstreams (tests/fakes.py) that hold a stream open or send more than any socket buffer.
(WebSocket frames are written by hand: trio-websocket's client leaks its socket when the server
closes first, and crashes on a ping that arrives while it is closing.)
Nothing here imports the server layer, so these tests are the spec for any server behind it.
"""

from __future__ import annotations

import json
import resource
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio

import trioproxy
from tests.fakes import FakeUpstream, Reply
from tests.lifecycle_support import (
    ANTHROPIC_HEAD,
    TINY_RCVBUF,
    Daemon,
    Received,
    abort,
    anthropic_flood,
    chat_body,
    chat_request,
    connect,
    daemon_ini,
    error_codes,
    free_port,
    http_get,
    parse_responses,
    poll_until,
    read_responses,
    read_until,
    read_until_eof,
    spawn_daemon,
    sse_events,
    started_daemon,
    upgrade_request,
    wait_healthy,
    ws_close_code,
    ws_frame,
    ws_handshake,
    ws_messages,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from pathlib import Path

DRAIN = 2.0  # drain_timeout in these configs; write_timeout is 30, so it cannot be what ends them
EXIT_BOUND = DRAIN + 2  # DESIGN.md "Cancellation": exit 0 within drain_timeout + 2 s
FLOOD_CONTENT = "x " * 100_000  # the demo answers one chunk per word: ~18 MB of SSE


def upstreams_ini(held_url: str, flood_url: str) -> str:
    return f"""
[upstream:demo]
type = demo
demo_delay = 0.2

[upstream:demoflood]
type = demo
demo_delay = 0

[upstream:held]
type = anthropic
base_url = {held_url}
api_key = sk-ant-test
max_retries = 0

[upstream:flood]
type = anthropic
base_url = {flood_url}
api_key = sk-ant-test
max_retries = 0

[model:demo]
upstream = demo

[model:demoflood]
upstream = demoflood

[model:held]
upstream = held

[model:flood]
upstream = flood
"""


async def open_stalled_stream(port: int, body: bytes) -> trio.SocketStream:
    """A streaming request from a client that never reads (a tiny receive window)."""
    stream = await connect(port, rcvbuf=TINY_RCVBUF)
    await stream.send_all(chat_request(body))
    return stream


async def dribble(stream: trio.SocketStream, interval: float = 0.25) -> None:
    """Slowloris: half a request head, then a byte every `interval` s until the server hangs up."""
    try:
        await stream.send_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        while True:
            await trio.sleep(interval)
            await stream.send_all(b"a")
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


class Reader:
    """Reads one client's response until the server closes, noting when the shutdown error came."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.got = Received()
        self.shutdown_error_at: float | None = None
        self.committed = trio.Event()  # the first SSE event arrived
        self.closed = trio.Event()  # the server closed the connection
        self.closed_at: float | None = None

    async def run(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            while True:
                try:
                    chunk = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    self.got.closed = self.got.reset = True
                    break
                if not chunk:
                    self.got.closed = True
                    break
                self.got.data += chunk
                if b"data: " in self.got.data:
                    self.committed.set()
                if self.shutdown_error_at is None and b"server_shutdown" in self.got.data:
                    self.shutdown_error_at = time.monotonic()
        if self.got.closed:
            self.closed_at = time.monotonic()
            self.closed.set()

    def events(self) -> list[Any]:
        responses = parse_responses(self.got.data, eof=self.got.closed)
        assert responses, f"no response: {self.got.data[:200]!r}"
        return sse_events(responses[0].body)


async def hang_up_after(seconds: float, clients: list[trio.SocketStream]) -> None:
    """Past the bound, the stalled clients give up (RST), so a server whose write outlives its
    drain cannot keep an in-process test running for the whole write_timeout."""
    await trio.sleep(seconds)
    for client in clients:
        abort(client)
        await client.aclose()


async def start_daemon(tmp_path: Path, body: str) -> Daemon:
    port = free_port()
    daemon = spawn_daemon(tmp_path, daemon_ini(port, body, drain=DRAIN, write_timeout=30), port)
    await wait_healthy(daemon)
    return daemon


async def sigterm_and_wait(daemon: Daemon) -> tuple[int | None, float]:
    """SIGTERM, then wait (bounded: one second past the bound) for the exit."""
    daemon.sigterm()
    code, elapsed = await daemon.wait_exit(EXIT_BOUND + 1)
    daemon.kill()  # a daemon that overran is killed here, so the test fails and nothing lingers
    return code, elapsed


def assert_clean_exit(daemon: Daemon, code: int | None, elapsed: float) -> None:
    stderr = daemon.stderr()
    assert code is not None, (
        f"still running {elapsed:.1f} s after SIGTERM (drain_timeout {DRAIN} s, write_timeout 30 s)"
    )
    assert code == 0, f"exit code {code}:\n{stderr[-3000:]}"
    assert elapsed <= EXIT_BOUND, (
        f"exit took {elapsed:.1f} s, more than drain_timeout + 2 s:\n{stderr[-2000:]}"
    )
    assert "Traceback" not in stderr, stderr[-3000:]


# --- SIGTERM -------------------------------------------------------------------------------------


async def test_sigterm_with_clients_that_never_read_and_a_slowloris_exits_0_within_the_drain(
    tmp_path: Path,
) -> None:
    held = FakeUpstream(Reply(body=[ANTHROPIC_HEAD, None]))
    flood = FakeUpstream(Reply(body=[ANTHROPIC_HEAD, anthropic_flood(), None]))
    async with trio.open_nursery() as nursery:
        held_url = await nursery.start(held.serve)
        flood_url = await nursery.start(flood.serve)
        daemon = await start_daemon(tmp_path, upstreams_ini(held_url, flood_url))
        clients: list[trio.SocketStream] = []
        try:
            with trio.fail_after(10):
                for _ in range(2):  # the demo upstream writes as fast as the socket takes it
                    body = chat_body(FLOOD_CONTENT, model="demoflood")
                    clients.append(await open_stalled_stream(daemon.port, body))
                for _ in range(2):  # a real upstream sends megabytes the client never reads
                    clients.append(await open_stalled_stream(daemon.port, chat_body(model="flood")))
                await flood.wait_requests(2)
                slowloris = await connect(daemon.port)
                clients.append(slowloris)
                nursery.start_soon(dribble, slowloris)
                await trio.sleep(1)  # let every write back up against a full window
            code, elapsed = await sigterm_and_wait(daemon)
        finally:
            daemon.kill()
            for client in clients:
                await client.aclose()
        nursery.cancel_scope.cancel()
    assert_clean_exit(daemon, code, elapsed)


async def test_sigterm_ends_every_stream_a_client_still_reads_with_server_shutdown(
    tmp_path: Path,
) -> None:
    held = FakeUpstream(Reply(body=[ANTHROPIC_HEAD, None]))
    flood = FakeUpstream(Reply(body=[ANTHROPIC_HEAD, None]))
    readers: list[Reader] = []
    async with trio.open_nursery() as nursery:
        held_url = await nursery.start(held.serve)
        flood_url = await nursery.start(flood.serve)
        daemon = await start_daemon(tmp_path, upstreams_ini(held_url, flood_url))
        try:
            with trio.fail_after(10):
                for model in ("demo", "demo", "held", "held"):
                    stream = await connect(daemon.port)
                    await stream.send_all(chat_request(chat_body(model=model)))
                    reader = Reader(stream)
                    readers.append(reader)
                    nursery.start_soon(reader.run, 15)
                for reader in readers:  # every stream has committed (its role chunk arrived)
                    await reader.committed.wait()
            before = [len(reader.got.data) for reader in readers]
            sigterm_at = time.monotonic()
            code, elapsed = await sigterm_and_wait(daemon)
        finally:
            daemon.kill()
        with trio.fail_after(3):
            for reader in readers:  # the daemon is gone: every reader sees the close
                await reader.closed.wait()
        nursery.cancel_scope.cancel()
    for reader in readers:
        await reader.stream.aclose()
    for i, reader in enumerate(readers):
        events = reader.events()
        assert error_codes(events) == ["server_shutdown"], f"stream {i} ended with {events[-2:]}"
        assert isinstance(events[-1], dict) and "error" in events[-1], "the error chunk is last"
        assert "[DONE]" not in events
        assert reader.shutdown_error_at is not None
        # open streams run on during the drain (DESIGN.md "Cancellation"), then end
        assert reader.shutdown_error_at - sigterm_at >= DRAIN - 0.5, "ended before the drain ran"
    for i in (0, 1):  # the demo streams kept sending while the drain ran
        assert len(readers[i].got.data) > before[i] + 200, "a draining stream stopped sending"
    for i, reader in enumerate(readers):  # a stream that ended for shutdown closes its connection
        assert reader.closed_at is not None and reader.shutdown_error_at is not None
        assert reader.closed_at - reader.shutdown_error_at < 1.0, (
            f"stream {i}: the connection stayed open "
            f"{reader.closed_at - reader.shutdown_error_at:.1f} s after its shutdown error"
        )
    assert_clean_exit(daemon, code, elapsed)


async def test_sigterm_closes_idle_websockets_at_once_and_ends_busy_ones_with_server_shutdown(
    tmp_path: Path,
) -> None:
    # Idle WebSockets close with 1001 "going away" (RFC 6455 §7.4.1) well before the drain ends;
    # a busy one's request ends with its server_shutdown error. Raw sockets and frames written by
    # hand: the server closes first here, which trio-websocket's client handles by leaking.
    held = FakeUpstream(Reply(body=[ANTHROPIC_HEAD, None]))
    sockets: list[tuple[trio.SocketStream, Received]] = []
    close_seen_at: dict[int, float] = {}

    async def watch(i: int, stream: trio.SocketStream, got: Received) -> None:
        # read until the close frame arrives (and then the server's EOF)
        with trio.move_on_after(15):
            while ws_close_code(got.data) is None and not got.closed:
                await read_until_eof(stream, 0.05, into=got)
            close_seen_at[i] = time.monotonic()
            await read_until_eof(stream, 2, into=got)

    async with trio.open_nursery() as nursery:
        held_url = await nursery.start(held.serve)
        daemon = await start_daemon(tmp_path, upstreams_ini(held_url, held_url))
        try:
            with trio.fail_after(10):
                for _ in range(4):
                    sockets.append(await ws_handshake(daemon.port))
                busy, busy_got = sockets[3]
                request = {"model": "held", "messages": [{"role": "user", "content": "hi"}]}
                create = {"type": "chat.completions.create", "id": "b1", "body": request}
                await busy.send_all(ws_frame(0x1, json.dumps(create).encode()))
                while not ws_messages(busy_got.data):  # the stream started
                    await read_until_eof(busy, 0.05, into=busy_got)
                for i, (stream, got) in enumerate(sockets):
                    nursery.start_soon(watch, i, stream, got)
            sigterm_at = time.monotonic()
            code, elapsed = await sigterm_and_wait(daemon)
        finally:
            daemon.kill()
        await poll_until(lambda: len(close_seen_at) == 4, 5)
        for stream, _ in sockets:
            await stream.aclose()
        nursery.cancel_scope.cancel()
    for i in range(3):
        idle_code = ws_close_code(sockets[i][1].data)
        assert idle_code == 1001, f"an idle WebSocket closed with {idle_code}, not 1001"
        after = close_seen_at[i] - sigterm_at
        assert after < 1.0, (
            f"an idle WebSocket was closed {after:.1f} s after SIGTERM, not at once "
            f"(drain_timeout {DRAIN} s)"
        )
    messages = ws_messages(sockets[3][1].data)
    assert messages[0]["type"] == "chunk"
    terminal = messages[-1]
    assert terminal["type"] == "error", messages[-3:]
    assert terminal["id"] == "b1"
    assert terminal["error"]["code"] == "server_shutdown"
    busy_code = ws_close_code(sockets[3][1].data)
    assert busy_code == 1001, f"the busy WebSocket closed with {busy_code}, not 1001"
    assert_clean_exit(daemon, code, elapsed)


async def test_serve_returns_within_the_drain_after_its_trigger_and_closes_every_upstream() -> None:
    held = FakeUpstream(Reply(body=[ANTHROPIC_HEAD, None]))
    flood = FakeUpstream(Reply(body=[ANTHROPIC_HEAD, anthropic_flood(), None]))
    async with trio.open_nursery() as outer:
        held_url = await outer.start(held.serve)
        flood_url = await outer.start(flood.serve)
        text = daemon_ini(0, upstreams_ini(held_url, flood_url), drain=DRAIN, write_timeout=30)
        config = trioproxy.parse_config(text, {})
        stop = trio.Event()
        clients: list[trio.SocketStream] = []
        reader: Reader | None = None
        with trio.move_on_after(EXIT_BOUND + 8) as overall:
            async with trio.open_nursery() as nursery:
                serve = partial(trioproxy.serve, config, shutdown_trigger=stop.wait)
                urls = await nursery.start(serve)
                port = int(urls[0].rsplit(":", 1)[1])
                with trio.fail_after(10):
                    stream = await connect(port)
                    clients.append(stream)
                    await stream.send_all(chat_request(chat_body(model="held")))
                    reader = Reader(stream)
                    outer.start_soon(reader.run, 15)
                    clients.append(await open_stalled_stream(port, chat_body(model="flood")))
                    body = chat_body(FLOOD_CONTENT, model="demoflood")
                    clients.append(await open_stalled_stream(port, body))
                    await held.wait_requests(1)
                    await flood.wait_requests(1)
                    await reader.committed.wait()
                    await trio.sleep(0.5)  # the stalled writes back up
                stop.set()
                stopped_at = trio.current_time()
                outer.start_soon(hang_up_after, EXIT_BOUND + 1, clients[1:])
            returned_after = trio.current_time() - stopped_at
        assert not overall.cancelled_caught, "serve kept running long after its shutdown trigger"
        # serve has returned: every upstream connection must already be closed, not left to exit
        with trio.move_on_after(0.5):
            for seen in [*held.seen, *flood.seen]:
                await seen.closed.wait()
        unclosed = [s.target for s in [*held.seen, *flood.seen] if not s.closed.is_set()]
        with trio.fail_after(3):
            assert reader is not None
            await reader.closed.wait()
        for client in clients:
            await client.aclose()
        outer.cancel_scope.cancel()
    assert returned_after <= EXIT_BOUND, f"serve returned {returned_after:.1f} s after its trigger"
    assert not unclosed, f"upstream connections still open after serve returned: {unclosed}"
    assert reader is not None
    assert error_codes(reader.events()) == ["server_shutdown"]


# --- resources: descriptors and in-flight slots come back --------------------------------------

# The issue asks for 2,000 request cycles and 500 WebSocket cycles; on a slow 2-core machine shared
# with other test runs we use 60 per kind (300 request cycles) and 100 WebSocket cycles. A leak of
# one descriptor per cycle (the malformed-upgrade bug: +99 for 100 requests) still shows plainly.
CYCLES_PER_KIND = 60
WS_CYCLES = 100
PARALLEL = 6  # cycles in flight at once
FD_TOLERANCE = 3  # descriptors that may come and go on their own (a log file, the pool)


@pytest.fixture(scope="module")
def cycling_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    body = """
[upstream:fast]
type = demo
demo_delay = 0

[upstream:slow]
type = demo
demo_delay = 0.02

[model:fast]
upstream = fast

[model:slow]
upstream = slow
"""
    yield from started_daemon(tmp_path_factory.mktemp("cycles"), body, drain=DRAIN)


async def one_cycle(port: int, kind: str, i: int) -> None:
    """One connect / request / close cycle of `kind`; reads are bounded, the outcome is not
    asserted here (other tests do), only what it leaves behind."""
    stream = await connect(port)
    async with stream:
        match kind:
            case "normal":
                variant = i % 3
                if variant == 0:  # an SSE stream read to its end
                    await stream.send_all(chat_request(chat_body(model="fast")))
                    await read_until(stream, b"data: [DONE]", 5)
                elif variant == 1:  # a JSON answer on a keep-alive connection the client closes
                    await stream.send_all(chat_request(chat_body(model="fast", stream=False)))
                    await read_until(stream, b'"finish_reason"', 5)
                else:
                    await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    await read_until(stream, b"\r\n\r\n", 5)
            case "aborted":  # the client vanishes mid-stream, half with a FIN, half with a RST
                await stream.send_all(chat_request(chat_body(model="slow")))
                await read_until(stream, b"data: ", 5)
                if i % 2:
                    abort(stream)
            case "malformed":
                bad = [
                    b"\x16\x03\x01\x02\x00garbage\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n",
                ][i % 3]
                await stream.send_all(bad)
                await read_until(stream, b"\r\n\r\n", 2)
            case "upgrade_with_stray_bytes":  # hypercorn#225's trigger
                await stream.send_all(upgrade_request() + b"x\n")
                await read_until(stream, b"\r\n\r\n", 2)
            case "upgrade_with_body":
                await stream.send_all(upgrade_request(extra="Content-Length: 5\r\n") + b"hello")
                await read_until(stream, b"\r\n\r\n", 2)


async def run_cycles(daemon: Daemon, count: int, cycle: Callable[[int], Awaitable[None]]) -> None:
    limit = trio.Semaphore(PARALLEL)

    async def guarded(i: int) -> None:
        async with limit:
            try:
                await cycle(i)
            except (OSError, AssertionError):
                await daemon.assert_alive()
                raise

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(guarded, i)


async def settled(
    daemon: Daemon, fds: int, in_flight: float, wait: float = 5.0
) -> tuple[int, float]:
    """Poll until the daemon is back at (fds + tolerance, in_flight) or `wait` s pass; return the
    last reading."""
    now_fds, now_in_flight = daemon.descriptors(), await daemon.in_flight()
    with trio.move_on_after(wait):
        while now_fds > fds + FD_TOLERANCE or now_in_flight != in_flight:
            await trio.sleep(0.1)
            now_in_flight = await daemon.in_flight()
            now_fds = daemon.descriptors()
    return now_fds, now_in_flight


async def baseline(daemon: Daemon, warm_up: Callable[[int], Awaitable[None]]) -> tuple[int, float]:
    """The daemon's readings after a few cycles of the kind under test (so lazily built state,
    loggers and buffers, exists already) and a short settle. Earlier tests on this daemon may have
    left something behind; each test compares against its own baseline."""
    await run_cycles(daemon, PARALLEL, warm_up)
    await trio.sleep(0.3)
    return daemon.descriptors(), await daemon.in_flight()


@pytest.mark.parametrize(
    "kind", ["normal", "aborted", "malformed", "upgrade_with_stray_bytes", "upgrade_with_body"]
)
async def test_request_cycles_leave_descriptors_and_in_flight_where_they_started(
    cycling_daemon: Daemon, kind: str
) -> None:
    cycle = partial(one_cycle, cycling_daemon.port, kind)
    with trio.fail_after(40):
        fds, in_flight = await baseline(cycling_daemon, cycle)
        await run_cycles(cycling_daemon, CYCLES_PER_KIND, cycle)
        after_fds, after_in_flight = await settled(cycling_daemon, fds, in_flight)
    assert after_in_flight == in_flight and after_fds <= fds + FD_TOLERANCE, (
        f"{CYCLES_PER_KIND} {kind} cycles: descriptors {fds} -> {after_fds}, "
        f"trioproxy_in_flight {in_flight} -> {after_in_flight}"
    )


async def ws_cycle(port: int, i: int) -> None:
    """One WebSocket open / close cycle, frames written by hand (a client that closes properly,
    RFC 6455 §7.1.2, except the abrupt variant)."""
    stream, got = await ws_handshake(port)
    async with stream:
        variant = i % 4
        if variant in (1, 2):
            model = "fast" if variant == 1 else "slow"
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            create = {"type": "chat.completions.create", "id": f"r{i}", "body": body}
            await stream.send_all(ws_frame(0x1, json.dumps(create).encode()))
            with trio.move_on_after(5):
                while True:  # variant 1: answered in full; variant 2: still running at the close
                    messages = ws_messages(got.data)
                    if (variant == 2 and messages) or any(m["type"] != "chunk" for m in messages):
                        break
                    await read_until_eof(stream, 0.05, into=got)
        if variant == 3:  # the client vanishes without a close frame
            abort(stream)
            return
        await stream.send_all(ws_frame(0x8, (1000).to_bytes(2, "big")))
        await read_until_eof(stream, 2, into=got)  # the server answers the close and hangs up


async def test_websocket_open_close_cycles_leave_descriptors_and_in_flight_where_they_started(
    cycling_daemon: Daemon,
) -> None:
    cycle = partial(ws_cycle, cycling_daemon.port)
    with trio.fail_after(40):
        fds, in_flight = await baseline(cycling_daemon, cycle)
        await run_cycles(cycling_daemon, WS_CYCLES, cycle)
        after_fds, after_in_flight = await settled(cycling_daemon, fds, in_flight)
    assert after_in_flight == in_flight and after_fds <= fds + FD_TOLERANCE, (
        f"{WS_CYCLES} WebSocket cycles: descriptors {fds} -> {after_fds}, "
        f"trioproxy_in_flight {in_flight} -> {after_in_flight}"
    )


async def test_at_the_descriptor_limit_the_daemon_serves_what_it_accepted_logs_once_and_recovers(
    tmp_path: Path,
) -> None:
    daemon = await start_daemon(
        tmp_path, "[upstream:demo]\ntype = demo\n\n[model:demo]\nupstream = demo\n"
    )
    silent: list[trio.SocketStream] = []
    try:
        kept = await connect(daemon.port)  # accepted before the limit is reached
        silent.append(kept)
        kept_got = Received()
        await kept.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert [r.status for r in await read_responses(kept, 1, 5, kept_got)] == [200]
        # A soft limit a few descriptors above what the daemon holds now (prlimit(2) on the
        # running process: the limit is hit by accept(), not at start-up).
        limit = daemon.descriptors() + 6
        _, hard = resource.prlimit(daemon.proc.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(daemon.proc.pid, resource.RLIMIT_NOFILE, (limit, hard))
        log_before = len(daemon.stderr())
        with trio.fail_after(10):
            for _ in range(30):  # silent connections: the first few fill the table, the rest queue
                silent.append(await connect(daemon.port))
            await trio.sleep(1.5)
            # the connection it had accepted is still served, at once
            await kept.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answers = await read_responses(kept, 2, 1, kept_got)
            assert [r.status for r in answers] == [200, 200], (
                f"an accepted connection starved at the limit: {kept_got}"
            )
            flood_log = daemon.stderr()[log_before:]
            for stream in silent[1:]:  # the silent clients give up: descriptors come free
                await stream.aclose()
            recovered = await http_get(daemon.port, "/health", seconds=5)
        assert recovered.status == 200, "no recovery after descriptors came free"
    finally:
        for stream in silent:
            await stream.aclose()
        daemon.kill()
    complaints = [
        line for line in flood_log.splitlines() if " ERROR " in line or " WARNING " in line
    ]
    assert 1 <= len(complaints) <= 2, (
        f"the limit should be logged once per interval, not once per failed accept: "
        f"{len(complaints)} lines in 1.5 s:\n" + "\n".join(complaints[:5])
    )


async def test_the_cycling_daemon_still_exits_0_on_sigterm(cycling_daemon: Daemon) -> None:
    # Last in this module: whatever the cycles left behind must not hold the shutdown.
    cycling_daemon.sigterm()
    code, elapsed = await cycling_daemon.wait_exit(EXIT_BOUND + 1)
    assert_clean_exit(cycling_daemon, code, elapsed)
