"""End-to-end benchmark: trioproxy on both servers and the floor, against a fake Anthropic upstream.

Stage: benchmark harness only. Run from the repository root:
`python bench/run.py [--quick | --smoke] [--out DIR] [--no-plot] [--paths floor,native,...]`.

Processes, loopback only, each its own (so its CPU time can be read from /proc/<pid>/stat and its
RSS from /proc/<pid>/status):
- the fake upstream (`bench/fake_upstream.py`);
- the floor (`bench/floor.py`): a minimal trio + h11 keep-alive relay in front of the fake, what
  any Python proxy on this stack must pay per request and per chunk;
- trioproxy on its default server, the native HTTP/1.1 face on h11 ("native");
- trioproxy with `[proxy] server = hypercorn` ("hypercorn");
- the load generator (this process), built on trioproxy's own `HTTPClient`.
The memory scenarios start a fresh set of these, so that the RSS before them is not inflated (nor
the growth hidden) by what earlier scenarios left in the allocator.

Every scenario runs on every path in the same run: "direct" (generator -> fake, Anthropic
Messages), "floor" (generator -> floor -> fake, the same Anthropic requests), "native" and
"hypercorn" (generator -> trioproxy -> fake, the client speaking OpenAI chat). The measured
requests are split into rounds that visit the paths in turn, so that a slow spell of this noisy
machine does not land on one path only. Writes DIR/latest.json (default bench/results), prints a
markdown table and the issue-16 targets (ratios to the floor), and draws DIR/latest.png when
matplotlib is importable. Counts are fixed and every scenario has a time budget; a scenario that
overruns it is reported as left out, never estimated; so is a path whose server does not start.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trioproxy.upstream import HTTPClient, PoolLimits, Timeouts  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

TICKS = os.sysconf("SC_CLK_TCK")
TIMEOUTS = Timeouts(connect=5.0, read=30.0, total=60.0)
# Held slow streams live as long as their scenario; connect is generous because a connect that
# overflows a listen backlog is retried by the kernel after 1 s, then 3 s.
HOLD_TIMEOUTS = Timeouts(connect=10.0, read=30.0, total=None)
CONFIG = """\
[proxy]
listen = 127.0.0.1:{proxy_port}
{server}log_level = info
metrics = true

[upstream:fake]
type = anthropic
base_url = http://127.0.0.1:{fake_port}
api_key = dummy-bench-key
connect_timeout = 5
read_timeout = 30
max_retries = 0

[model:bench-*]
upstream = fake
"""
# The paths, in table order. "native" writes no `server` line: it is the default server.
PATHS = ("direct", "floor", "native", "hypercorn")
RELAYS = PATHS[1:]
SERVER_LINE = {"native": "", "hypercorn": "server = hypercorn\n"}

MODES = ("full", "quick", "smoke")
# (full, quick, smoke) sizes; request and stream counts are per path
SIZES = {
    "c1_requests": (2000, 300, 20),
    "c32_requests": (6000, 1500, 64),
    "c256_requests": (4000, 1000, 256),
    "ttfb_requests": (500, 100, 10),
    "paced_streams": (640, 128, 32),
    "long_streams": (20, 4, 1),
    "many_streams": (64, 32, 4),
    "cancel_runs": (50, 30, 5),
    "memory_small": (1000, 200, 10),
    "memory_large": (5000, 1000, 20),
    "slow_delta_ms": (5000, 2000, 100),
    "rounds": (3, 2, 1),
}
NONSTREAM = ((1, "c1_requests"), (32, "c32_requests"), (256, "c256_requests"))
# Generator pool: more idle connections per origin than the highest concurrency, so the pool
# never closes a connection a worker is about to reuse (each worker keeps one connection).
GENERATOR_IDLE = 512
LONG_CHUNKS = 2000  # deltas per unpaced stream
MANY_CONCURRENCY = 32  # unpaced streams at a time in the many-streams scenario
PACED_CHUNKS = 20  # deltas per paced stream, 10 ms apart
# Connections opened at a time: well below any accept queue here (trioproxy listens with 4096, the
# kernel may cap it lower), so no SYN is dropped (a dropped SYN costs the client 1 s).
OPENERS = 100
MEMORY_WARMUP = 20  # slow streams opened and closed before each memory measurement
# Goals this bench checks: 5,000 concurrent slow streams in one proxy process under 400 MB RSS,
# and (issue 16) at most 40 KiB each.
TARGET_STREAMS, TARGET_RSS_MB, TARGET_KIB_PER_STREAM = 5000, 400, 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # after the ")" field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def open_fds(pid: int) -> int:
    """File descriptors the process holds now (sockets, log file, pipes)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def listen_overflows() -> int:
    """TcpExt ListenOverflows: connects dropped because an accept queue was full, counted by
    the kernel for the whole network namespace (any process), -1 if unreadable."""
    try:
        names, values = (
            line.split() for line in Path("/proc/net/netstat").read_text().splitlines()[:2]
        )
        return int(dict(zip(names, values, strict=True))["ListenOverflows"])
    except (OSError, ValueError, KeyError):
        return -1


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def calibrate() -> float:
    """Machine speed: the best of 3 runs of a pure-Python loop adding up 10^6 ints, in ms.

    Run in the generator before any process is started; lower is a faster machine. Absolute
    figures from two runs compare only after scaling by this.
    """
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        best = min(best, time.perf_counter() - start)
    return best * 1000


@dataclass
class Target:
    """One path to the fake. `pid` is the process that serves it (the fake itself for direct):
    its CPU and RSS are the path's figures. `proxied`: the client speaks OpenAI chat."""

    name: str
    base: str
    proxied: bool
    pid: int
    url: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.url = self.base + ("/v1/chat/completions" if self.proxied else "/v1/messages")
        self.headers = [("content-type", "application/json")]
        if not self.proxied:
            self.headers += [("x-api-key", "dummy"), ("anthropic-version", "2023-06-01")]

    def body(self, model: str, stream: bool) -> bytes:
        payload: dict[str, Any] = {
            "model": model,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "Say hello."}],
        }
        if stream:
            payload["stream"] = True
        return json.dumps(payload).encode()


async def one_request(client: HTTPClient, target: Target, model: str, stream: bool) -> float:
    """Send one request, read the whole body; return the latency in seconds."""
    start = time.perf_counter()
    async with client.stream(
        "POST",
        target.url,
        headers=target.headers,
        body=target.body(model, stream),
        timeouts=TIMEOUTS,
    ) as response:
        if response.status != 200:
            raise RuntimeError(
                f"{target.name}: status {response.status}: {await response.aread()!r}"
            )
        async for _ in response.aiter_bytes():
            pass
    return time.perf_counter() - start


async def first_byte(client: HTTPClient, target: Target, model: str) -> float:
    start = time.perf_counter()
    async with client.stream(
        "POST", target.url, headers=target.headers, body=target.body(model, True), timeouts=TIMEOUTS
    ) as response:
        if response.status != 200:
            raise RuntimeError(f"{target.name}: status {response.status}")
        async for piece in response.aiter_bytes():
            if piece:
                elapsed = time.perf_counter() - start
                break
        async for _ in response.aiter_bytes():
            pass
    return elapsed


async def run_load(
    client: HTTPClient, target: Target, model: str, stream: bool, count: int, concurrency: int
) -> tuple[list[float], float]:
    """`count` requests by `concurrency` workers back to back: (latencies in s, wall time in s)."""
    latencies: list[float] = []
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            latencies.append(await one_request(client, target, model, stream))

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return latencies, time.perf_counter() - start


async def open_connections(client: HTTPClient, target: Target, count: int) -> None:
    """Leave `count` idle connections to `target` in the generator's pool, opening at most
    OPENERS at a time (requests at concurrency OPENERS, 2 x OPENERS, ... count): a burst of
    connects beyond the listen backlog costs a 1 s SYN retry, which is not what c=N measures."""
    step = OPENERS
    while True:
        step = min(step, count)
        await run_load(client, target, "bench-s0-d0", False, step, step)
        if step == count:
            return
        step += OPENERS


async def fake_stats(client: HTTPClient, fake_base: str) -> dict[str, int]:
    """The fake's connection counters: accepted since start, open now (this request included)."""
    async with client.stream("GET", fake_base + "/_stats", headers=[], timeouts=TIMEOUTS) as answer:
        stats: dict[str, int] = json.loads(await answer.aread())
    return stats


async def load_rounds(
    client: HTTPClient,
    targets: list[Target],
    fake: Target,
    model: str,
    stream: bool,
    count: int,
    concurrency: int,
    rounds: int,
) -> dict[str, dict[str, Any]]:
    """`count` requests per path at `concurrency`, in `rounds` rounds, each visiting every path
    in turn. Per path: latency percentiles and req/s over all its rounds, the CPU of its serving
    process (`cpu_s`; for direct, the fake's) and the fake's (`fake_cpu_s`) over its requests,
    and the connections the fake accepted meanwhile (the stats request itself may add one)."""
    acc: dict[str, dict[str, Any]] = {
        target.name: {
            "latencies": [],
            "wall_s": 0.0,
            "cpu_s": 0.0,
            "fake_cpu_s": 0.0,
            "fake_connections_accepted": 0,
            "client_connections_opened": 0,
        }
        for target in targets
    }
    for r in range(rounds):
        n = count // rounds + (1 if r < count % rounds else 0)
        for target in targets:
            a = acc[target.name]
            accepted = (await fake_stats(client, fake.base))["accepted"]
            opened = client.statistics().opened
            cpu, fake_cpu = cpu_seconds(target.pid), cpu_seconds(fake.pid)
            latencies, wall = await run_load(client, target, model, stream, n, concurrency)
            a["cpu_s"] += cpu_seconds(target.pid) - cpu
            a["fake_cpu_s"] += cpu_seconds(fake.pid) - fake_cpu
            a["latencies"] += latencies
            a["wall_s"] += wall
            a["client_connections_opened"] += client.statistics().opened - opened
            a["fake_connections_accepted"] += (await fake_stats(client, fake.base))[
                "accepted"
            ] - accepted
    out: dict[str, dict[str, Any]] = {}
    for name, a in acc.items():
        latencies = a.pop("latencies")
        out[name] = {
            "requests": len(latencies),
            "concurrency": concurrency,
            "rounds": rounds,
            **a,
            "per_s": len(latencies) / a["wall_s"],
            "p50_ms": pct(latencies, 50) * 1000,
            "p99_ms": pct(latencies, 99) * 1000,
        }
    return out


async def cancel_latency(
    client: HTTPClient, target: Target, control: str, runs: int
) -> dict[str, Any]:
    """A client reads the first bytes of a held stream, then disconnects; how long until the
    fake upstream sees EOF (its time.monotonic() minus ours, both CLOCK_MONOTONIC)."""
    delays: list[float] = []
    for i in range(runs):
        hold_id = f"{target.name}{i}x{os.getpid()}"
        async with client.stream(
            "POST",
            target.url,
            headers=target.headers,
            body=target.body(f"bench-hold-{hold_id}", True),
            timeouts=TIMEOUTS,
        ) as response:
            async for piece in response.aiter_bytes():
                if piece:
                    break
            disconnected = time.monotonic()
        # leaving the block half-read closes the client connection at once (client.py)
        async with client.stream(
            "GET", f"{control}/_close/{hold_id}", headers=[], timeouts=TIMEOUTS
        ) as answer:
            data = json.loads(await answer.aread())
        if "closed_at" not in data:
            raise RuntimeError(f"{target.name}: fake never saw the close of run {i}")
        delays.append(data["closed_at"] - disconnected)
    return {
        "runs": len(delays),
        "p50_ms": pct(delays, 50) * 1000,
        "p99_ms": pct(delays, 99) * 1000,
    }


async def hold_slow_streams(
    client: HTTPClient, target: Target, n: int, delta_ms: int, measure: bool = True
) -> dict[str, Any]:
    """Hold `n` slow streams open at the same time and read the RSS of `target.pid`, the process
    that serves them (a relay, or the fake for "direct").

    Each stream (`bench-slow-{delta_ms}`) connects (at most OPENERS at a time) and reads up to
    its first data; once every stream is open or has failed, hold them all for one delta interval
    (each open stream relays exactly one delta in it: `cpu_while_held_pct` is the process' CPU
    over it in % of one core, `cpu_us_per_delta` the same CPU / the streams open), then read
    VmRSS and the open fds (`measure`=False, for a warm-up: no hold). `rss_per_stream_kib` is
    (that RSS - the RSS just before the first connect) / the streams still open then. Then every
    client connection is closed at once; `release_ms` is the time from that until the process
    holds no more fds than before (every socket of those streams closed), None after 30 s.
    Connect or status failures are counted in `failed`, streams that ended on their own while
    held in `dropped_before_close`, never hidden: figures are over `open_at_measurement`.
    """
    pid = target.pid
    rss_before, fds_before = rss_kib(pid), open_fds(pid)
    opener = trio.Semaphore(OPENERS)
    opened = 0
    failed: Counter[str] = Counter()
    dropped: Counter[str] = Counter()  # open streams that ended before we closed them
    settled = trio.Event()
    model = f"bench-slow-{delta_ms}"

    def all_settled() -> None:
        if opened + sum(failed.values()) == n:
            settled.set()

    async def hold() -> None:
        nonlocal opened
        await opener.acquire()
        holding = False
        try:
            async with client.stream(
                "POST",
                target.url,
                headers=target.headers,
                body=target.body(model, True),
                timeouts=HOLD_TIMEOUTS,
            ) as response:
                if response.status != 200:
                    failed[f"status {response.status}"] += 1
                    return
                async for piece in response.aiter_bytes():
                    if piece:
                        holding = True
                        break
                if not holding:
                    failed["ended before any data"] += 1
                    return
                opened += 1
                opener.release()
                all_settled()
                async for _ in response.aiter_bytes():
                    pass
                dropped["ended while held"] += 1
        except Exception as exc:
            (dropped if holding else failed)[type(exc).__name__] += 1
        finally:
            if not holding:
                opener.release()
                all_settled()

    start = time.monotonic()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(hold)
        await settled.wait()
        open_s = time.monotonic() - start
        settle_s = delta_ms / 1000 if measure else 0.0
        cpu_before = cpu_seconds(pid)
        await trio.sleep(settle_s)
        cpu_held = cpu_seconds(pid) - cpu_before
        rss, fds = rss_kib(pid), open_fds(pid)
        still_open = opened - sum(dropped.values())
        closing = time.monotonic()
        nursery.cancel_scope.cancel()  # each stream leaves its block half-read: socket closed
    release_ms: float | None = None
    while time.monotonic() - closing < 30:
        if open_fds(pid) <= fds_before:
            release_ms = (time.monotonic() - closing) * 1000
            break
        await trio.sleep(0.01)
    return {
        "requested": n,
        "open": opened,
        "failed": dict(failed),
        "dropped_before_close": dict(dropped),
        "open_at_measurement": still_open,
        "time_to_open_all_s": open_s,
        "settle_s": settle_s,
        "cpu_while_held_pct": cpu_held / settle_s * 100 if settle_s else None,
        "cpu_us_per_delta": cpu_held * 1e6 / still_open if settle_s and still_open else None,
        "rss_before_mib": rss_before / 1024,
        "rss_mib": rss / 1024,
        "rss_per_stream_kib": (rss - rss_before) / still_open if still_open else None,
        "fds_per_stream": (fds - fds_before) / still_open if still_open else None,
        "release_ms": release_ms,
        "rss_after_release_mib": rss_kib(pid) / 1024,
    }


class Exited(Exception):
    """A server process ended before it answered its readiness check."""


async def wait_ready(
    client: HTTPClient, url: str, deadline: float, proc: trio.Process | None = None
) -> float:
    """Poll `url` until it answers 200; return the monotonic time it first did."""
    quick = Timeouts(connect=0.5, read=2.0, total=2.0)
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise Exited(f"exited with status {proc.returncode} before it was ready")
        try:
            async with client.stream("GET", url, headers=[], timeouts=quick) as response:
                await response.aread()
                if response.status == 200:
                    return time.monotonic()
        except Exception:
            pass
        await trio.sleep(0.005)
    raise RuntimeError(f"{url} not ready in time")


@dataclass
class Stack:
    """A fake upstream and the relays in front of it that came up; `left_out`: those that did
    not, with the reason (the last line of their log)."""

    fake: trio.Process
    targets: list[Target]  # direct first, then the relays in PATHS order
    ready_ms: dict[str, float]
    left_out: dict[str, str]

    @property
    def direct(self) -> Target:
        return self.targets[0]


def last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "(no output)"


class Bench:
    def __init__(self, mode: str, budget: float, tmp: Path, relays: tuple[str, ...]) -> None:
        self.mode = mode
        column = MODES.index(mode)
        self.size = {name: sizes[column] for name, sizes in SIZES.items()}
        self.deadline = time.monotonic() + budget
        self.tmp = tmp
        self.relays = relays
        self.env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        self.env["PYTHONPATH"] = str(ROOT)
        self.procs: list[trio.Process] = []
        self.results: dict[str, Any] = {}
        self.omitted: dict[str, str] = {}
        self.paths_left_out: dict[str, str] = {}
        self.ready_ms: dict[str, list[float]] = {}  # every start of each relay in this run

    async def scenario(
        self, name: str, seconds: float, coro_fn: Callable[[], Awaitable[dict[str, Any]]]
    ) -> None:
        left = self.deadline - time.monotonic()
        if left < 1:
            self.omitted[name] = "no time left in the overall budget"
            return
        start, overflows = time.monotonic(), listen_overflows()
        with trio.move_on_after(min(seconds, left)) as scope:
            self.results[name] = await coro_fn()
            # a connect dropped by a full accept queue waits >= 1 s for the kernel's retry
            self.results[name]["listen_overflows"] = listen_overflows() - overflows
        if scope.cancelled_caught:
            self.results.pop(name, None)
            self.omitted[name] = f"did not finish within {min(seconds, left):.0f} s"
        outcome = "done" if name in self.results else "left out"
        print(f"  {name}: {outcome} ({time.monotonic() - start:.1f} s)", file=sys.stderr)

    async def start_stack(self, client: HTTPClient, tag: str) -> Stack:
        """Start a fake, then each relay in front of it, one at a time (so that each one's time
        to ready is its own); logs and configs in the temp dir, named by `tag`."""
        fake_port = free_port()
        fake = await trio.lowlevel.open_process(
            [sys.executable, str(ROOT / "bench" / "fake_upstream.py"), "--port", str(fake_port)],
            env=self.env,
        )
        self.procs.append(fake)
        fake_base = f"http://127.0.0.1:{fake_port}"
        await wait_ready(client, fake_base + "/_health", time.monotonic() + 20, fake)
        stack = Stack(fake, [Target("direct", fake_base, False, fake.pid)], {}, {})
        for name in self.relays:
            port = free_port()
            if name == "floor":
                argv = [str(ROOT / "bench" / "floor.py"), "--port", str(port)]
                argv += ["--upstream-port", str(fake_port)]
                health = "/_health"  # relayed to the fake
            else:
                ini = self.tmp / f"{tag}-{name}.ini"
                config = CONFIG.format(
                    proxy_port=port, fake_port=fake_port, server=SERVER_LINE[name]
                )
                ini.write_text(config)
                argv = ["-m", "trioproxy", "--config", str(ini)]
                health = "/health"
            log_path = self.tmp / f"{tag}-{name}.log"
            started = time.monotonic()
            with log_path.open("wb") as log:  # the child keeps its own copy
                proc = await trio.lowlevel.open_process(
                    [sys.executable, *argv],
                    env=self.env,
                    cwd=self.tmp,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self.procs.append(proc)
            base = f"http://127.0.0.1:{port}"
            try:
                ready = await wait_ready(client, base + health, started + 30, proc)
            except (Exited, RuntimeError) as exc:
                stack.left_out[name] = f"{exc}: {last_line(log_path)}"
                await self.stop([proc])
                continue
            stack.ready_ms[name] = (ready - started) * 1000
            self.ready_ms.setdefault(name, []).append(stack.ready_ms[name])
            stack.targets.append(Target(name, base, name != "floor", proc.pid))
        return stack

    async def stop(self, procs: list[trio.Process]) -> None:
        with trio.CancelScope(shield=True):
            for proc in reversed(procs):
                if proc.returncode is None:
                    proc.terminate()
            for proc in procs:
                with trio.move_on_after(15):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                self.procs.remove(proc)

    async def stop_stack(self, stack: Stack) -> None:
        pids = {target.pid for target in stack.targets}
        await self.stop([proc for proc in self.procs if proc.pid in pids])

    async def memory(self, n: int) -> dict[str, Any]:
        """Memory per open slow stream, every path on a fresh stack (see hold_slow_streams).

        "direct" holds the streams on the fake itself, so its figures are the fake's RSS: the
        floor of one trio task + one socket per stream in a minimal server, not a relay's.
        """
        client = HTTPClient(environ={})
        stack: Stack | None = None
        try:
            stack = await self.start_stack(client, f"memory-{n}")
            delta_ms = self.size["slow_delta_ms"]
            out: dict[str, Any] = {
                "streams": n,
                "delta_interval_ms": delta_ms,
                "opener_concurrency": OPENERS,
                "warmup_streams": MEMORY_WARMUP,
                "left_out": stack.left_out,
            }
            for target in stack.targets:
                await hold_slow_streams(client, target, MEMORY_WARMUP, delta_ms, measure=False)
                out[target.name] = await hold_slow_streams(client, target, n, delta_ms)
            return out
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()
            if stack is not None:
                await self.stop_stack(stack)

    async def main(self) -> None:
        size = self.size
        client = HTTPClient(pool=PoolLimits(max_idle=GENERATOR_IDLE), environ={})
        try:
            stack = await self.start_stack(client, "main")
            self.paths_left_out = stack.left_out
            fake, targets = stack.direct, stack.targets
            await trio.sleep(0.5)
            self.results["startup"] = {
                target.name: {
                    "time_to_ready_ms": stack.ready_ms[target.name],
                    "idle_rss_mib": rss_kib(target.pid) / 1024,
                }
                for target in targets[1:]
            }
            self.results["startup"]["fake_idle_rss_mib"] = rss_kib(fake.pid) / 1024
            # warm up every path (connections, imports, first-request caches)
            for target in targets:
                await run_load(client, target, "bench-s5-d0", False, 50, 4)
                await run_load(client, target, "bench-s5-d0", True, 20, 4)

            rounds = size["rounds"]
            for concurrency, key in NONSTREAM:

                async def nonstream(c: int = concurrency, n: int = size[key]) -> dict[str, Any]:
                    """Non-streaming requests back to back at concurrency c. Before measuring,
                    the generator's c connections to each path are opened (see
                    open_connections), so that the measurement reuses them (connections opened
                    during it are reported)."""
                    for target in targets:
                        await open_connections(client, target, c)
                    out = await load_rounds(
                        client, targets, fake, "bench-s0-d0", False, n, c, rounds
                    )
                    for result in out.values():
                        result["cpu_ms_per_request"] = result["cpu_s"] * 1000 / n
                        result["fake_cpu_ms_per_request"] = result["fake_cpu_s"] * 1000 / n
                    return out

                await self.scenario(f"nonstream_c{concurrency}", 300, nonstream)

            async def ttfb() -> dict[str, Any]:
                times: dict[str, list[float]] = {target.name: [] for target in targets}
                for r in range(rounds):
                    n = size["ttfb_requests"] // rounds + (
                        1 if r < size["ttfb_requests"] % rounds else 0
                    )
                    for target in targets:
                        for _ in range(n):
                            times[target.name].append(
                                await first_byte(client, target, "bench-s5-d0")
                            )
                return {
                    name: {
                        "requests": len(values),
                        "p50_ms": pct(values, 50) * 1000,
                        "p99_ms": pct(values, 99) * 1000,
                    }
                    for name, values in times.items()
                }

            await self.scenario("stream_ttfb_c1", 90, ttfb)

            async def streams(
                model: str, count: int, concurrency: int, chunks: int
            ) -> dict[str, Any]:
                """`count` streams of `chunks` deltas at `concurrency` per path; chunks/s is
                every delta relayed over the wall time; CPU per chunk is the serving process'
                CPU over the scenario / (streams x chunks), per-request work included (direct:
                the fake's CPU per chunk it sent, what producing one costs here, for scale)."""
                out = await load_rounds(
                    client, targets, fake, model, True, count, concurrency, rounds
                )
                for result in out.values():
                    result["chunks_per_stream"] = chunks
                    result["chunks_per_s"] = count * chunks / result["wall_s"]
                    result["cpu_us_per_chunk"] = result["cpu_s"] * 1e6 / (count * chunks)
                    result["fake_cpu_us_per_chunk"] = result["fake_cpu_s"] * 1e6 / (count * chunks)
                return out

            await self.scenario(
                "stream_c32_20x10ms",
                150,
                lambda: streams(
                    f"bench-s{PACED_CHUNKS}-d10", size["paced_streams"], 32, PACED_CHUNKS
                ),
            )
            await self.scenario(
                "stream_2000_unpaced",
                90,
                lambda: streams(f"bench-s{LONG_CHUNKS}-d0", size["long_streams"], 1, LONG_CHUNKS),
            )
            await self.scenario(
                "stream_2000_unpaced_c32",
                240,
                lambda: streams(
                    f"bench-s{LONG_CHUNKS}-d0",
                    size["many_streams"],
                    min(MANY_CONCURRENCY, size["many_streams"]),
                    LONG_CHUNKS,
                ),
            )

            async def cancel() -> dict[str, Any]:
                return {
                    target.name: await cancel_latency(
                        client, target, fake.base, size["cancel_runs"]
                    )
                    for target in targets
                }

            await self.scenario("cancel_to_upstream_eof", 90, cancel)
            self.results["after"] = {
                target.name: {
                    "rss_mib": rss_kib(target.pid) / 1024,
                    "cpu_total_s": cpu_seconds(target.pid),
                }
                for target in targets
            }
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()
            await self.stop(list(self.procs))
        for key, seconds in (("memory_small", 240), ("memory_large", 480)):
            await self.scenario(
                key.replace("memory_", "memory_slow_"), seconds, partial(self.memory, size[key])
            )
        # time to ready: the best of this run's starts (the main stack's and each memory
        # stack's), so that a first start paying for cold caches or .pyc compilation does not
        # decide it; every start is in the JSON
        for name, times in self.ready_ms.items():
            startup = self.results.get("startup", {}).get(name)
            if startup is not None:
                startup["time_to_ready_ms"] = min(times)
                startup["time_to_ready_all_ms"] = times


@dataclass
class Row:
    """One line of the table: a value per path (None: not measured or not meaningful there).
    `lower_better` says which way is ahead (None: not compared); `panel` names its panel in the
    plot (main figures only)."""

    label: str
    values: dict[str, float | None]
    digits: int = 2
    lower_better: bool | None = True
    panel: str | None = None
    parent: str = ""  # for a "  same: ..." row, the row it continues

    @property
    def full_label(self) -> str:
        label = self.label.strip()
        return f"{self.parent}, {label.removeprefix('same: ')}" if self.parent else label

    def ratio(self, a: str, b: str) -> float | None:
        x, y = self.values.get(a), self.values.get(b)
        return x / y if x is not None and y else None

    def behind(self) -> bool | None:
        """Whether native is behind hypercorn on this row (None: not compared)."""
        native, hyper = self.values.get("native"), self.values.get("hypercorn")
        if self.lower_better is None or native is None or hyper is None:
            return None
        return native > hyper if self.lower_better else native < hyper


def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def rows(results: dict[str, Any]) -> list[Row]:
    """The table's rows, in order; a scenario that is missing contributes none."""
    out: list[Row] = []

    def add(
        label: str,
        values: dict[str, float | None],
        digits: int = 2,
        lower_better: bool | None = True,
        panel: str | None = None,
    ) -> None:
        parent = ""
        if label.startswith("  same"):
            parent = next(row.label for row in reversed(out) if not row.label.startswith(" "))
        out.append(Row(label, values, digits, lower_better, panel, parent))

    def per_path(s: dict[str, Any], key: str, paths: tuple[str, ...] = PATHS) -> dict[str, Any]:
        return {path: s[path][key] for path in paths if path in s and s[path].get(key) is not None}

    def over_direct(s: dict[str, Any]) -> dict[str, float | None]:
        return {path: s[path]["p50_ms"] - s["direct"]["p50_ms"] for path in RELAYS if path in s}

    r = results
    if "startup" in r:
        s = r["startup"]
        add("time to ready after start (ms)", per_path(s, "time_to_ready_ms", RELAYS), 0)
        add("idle RSS (MiB)", per_path(s, "idle_rss_mib", RELAYS), 1)
    for c, _ in NONSTREAM:
        s = r.get(f"nonstream_c{c}")
        if not s:
            continue
        add(
            f"non-streaming c={c}: req/s",
            per_path(s, "per_s"),
            0,
            False,
            f"non-streaming c={c}: req/s",
        )
        add(f"non-streaming c={c}: p50 latency (ms)", per_path(s, "p50_ms"))
        add(f"non-streaming c={c}: p99 latency (ms)", per_path(s, "p99_ms"))
        if c == 1:
            add(
                "added latency over direct p50, c=1 (ms)",
                over_direct(s),
                3,
                True,
                "non-streaming c=1: added latency over direct p50 (ms)",
            )
        add(
            f"CPU per non-streaming request, c={c} (ms; direct = the fake's)",
            per_path(s, "cpu_ms_per_request"),
            3,
            True,
            f"CPU per non-streaming request, c={c} (ms)" if c in (1, 32) else None,
        )
        add(
            f"  same: connections opened to the fake per 1000 requests, c={c}",
            {
                path: s[path]["fake_connections_accepted"] * 1000 / s[path]["requests"]
                for path in PATHS
                if path in s
            },
            0,
            None,  # how far a pool grew during the rounds, not a speed: not compared
        )
    s = r.get("stream_ttfb_c1")
    if s:
        add("streaming: first data byte p50, c=1 (ms)", per_path(s, "p50_ms"))
        add(
            "  same: over direct p50 (ms)",
            over_direct(s),
            3,
            True,
            "first SSE data over direct p50, c=1 (ms)",
        )
    s = r.get("stream_c32_20x10ms")
    if s:
        add(
            "32 concurrent streams, 20 chunks 10 ms apart: streams/s",
            per_path(s, "per_s"),
            1,
            False,
        )
        add("  same: p50 stream duration (ms)", per_path(s, "p50_ms"), 1)
        add(
            "  same: CPU per relayed chunk, per-request cost included (µs; direct = the fake's)",
            per_path(s, "cpu_us_per_chunk"),
            1,
            True,
            "CPU per relayed chunk arriving alone (paced streams, µs)",
        )
    s = r.get("stream_2000_unpaced")
    if s:
        add(
            "2000-chunk stream unpaced, one at a time: duration p50 (ms)",
            per_path(s, "p50_ms"),
            1,
        )
        add("  same: chunks/s", per_path(s, "chunks_per_s"), 0, False)
        add(
            "  same: CPU per relayed chunk (µs; direct = the fake's)",
            per_path(s, "cpu_us_per_chunk"),
            1,
            True,
            "CPU per relayed chunk, one unpaced stream (µs)",
        )
    s = r.get("stream_2000_unpaced_c32")
    if s:
        c = s["direct"]["concurrency"]
        add(
            f"{c} concurrent 2000-chunk streams unpaced: chunks/s, all streams",
            per_path(s, "chunks_per_s"),
            0,
            False,
        )
        add(
            "  same: CPU per relayed chunk (µs; direct = the fake's)",
            per_path(s, "cpu_us_per_chunk"),
            1,
        )
    s = r.get("cancel_to_upstream_eof")
    if s:
        add(
            "client disconnect -> upstream EOF p50 (ms)",
            per_path(s, "p50_ms"),
            3,
            True,
            "client disconnect -> upstream EOF p50 (ms)",
        )
        add("client disconnect -> upstream EOF p99 (ms)", per_path(s, "p99_ms"), 3)
    for key in ("memory_slow_small", "memory_slow_large"):
        s = r.get(key)
        if not s:
            continue
        n = s["streams"]
        short = {path: s[path]["open_at_measurement"] for path in PATHS if path in s}
        short = {path: held for path, held in short.items() if held != n}
        opened = f"{n}" if not short else f"{n} asked ({short} open)"
        add(
            f"{opened} slow streams open: RSS (MiB; direct = the fake's)",
            per_path(s, "rss_mib"),
            1,
        )
        add(
            "  same: RSS per open stream (KiB; direct = the fake's)",
            per_path(s, "rss_per_stream_kib"),
            1,
            True,
            f"{opened} slow streams: RSS per open stream (KiB)"
            if key == "memory_slow_large"
            else None,
        )
        add(
            f"  same: CPU while held, 1 delta per {s['delta_interval_ms'] / 1000:g} s each "
            "(% of a core)",
            per_path(s, "cpu_while_held_pct"),
            0,
        )
        add(
            "  same: CPU per relayed delta while held (µs; direct = the fake's per sent delta)",
            per_path(s, "cpu_us_per_delta"),
            0,
        )
        add("  same: time to open them all (s)", per_path(s, "time_to_open_all_s"), 2)
        add(
            "  same: all closed -> server fds back to before (ms)",
            per_path(s, "release_ms"),
            0,
        )
    return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 16's targets, each a ratio to the floor in this run, and the memory goal."""
    out: list[dict[str, Any]] = []

    def ratio(name: str, goal: float, unit: str, values: dict[str, float]) -> None:
        floor = values.get("floor")
        if not floor:
            return
        out.append(
            {
                "target": name,
                "goal": goal,
                "ratio_to_floor": True,
                "floor": floor,
                "floor_unit": unit,
                **{
                    path: values[path] / floor for path in ("native", "hypercorn") if path in values
                },
            }
        )

    def over_direct(s: dict[str, Any]) -> dict[str, float]:
        return {path: s[path]["p50_ms"] - s["direct"]["p50_ms"] for path in RELAYS if path in s}

    def per_relay(s: dict[str, Any], key: str) -> dict[str, float]:
        return {path: s[path][key] for path in RELAYS if path in s}

    r = results
    if "nonstream_c1" in r:
        s = r["nonstream_c1"]
        ratio("CPU per non-streaming request, c=1", 2.5, "ms", per_relay(s, "cpu_ms_per_request"))
        ratio("added latency over direct p50, c=1", 2.0, "ms", over_direct(s))
    if "nonstream_c32" in r:
        s = r["nonstream_c32"]
        ratio("CPU per non-streaming request, c=32", 2.5, "ms", per_relay(s, "cpu_ms_per_request"))
    if "stream_ttfb_c1" in r:
        ratio("first SSE data over direct p50, c=1", 2.0, "ms", over_direct(r["stream_ttfb_c1"]))
    for key, name in (
        ("stream_c32_20x10ms", "CPU per relayed chunk arriving alone (32 paced streams)"),
        ("stream_2000_unpaced", "CPU per relayed chunk, one unpaced stream"),
    ):
        if key in r:
            ratio(name, 1.5, "µs", per_relay(r[key], "cpu_us_per_chunk"))
    for key in ("memory_slow_small", "memory_slow_large"):
        s = r.get(key, {})
        if s.get("streams") == TARGET_STREAMS:
            out.append(
                {
                    "target": f"RSS per open stream, {TARGET_STREAMS} slow streams (KiB)",
                    "goal": TARGET_KIB_PER_STREAM,
                    "ratio_to_floor": False,
                    "floor": s.get("floor", {}).get("rss_per_stream_kib"),
                    "floor_unit": "KiB",
                    **{
                        path: s[path]["rss_per_stream_kib"]
                        for path in ("native", "hypercorn")
                        if path in s
                    },
                }
            )
    return out


def target_lines(results: dict[str, Any]) -> list[str]:
    """The targets as a markdown table, then where native is behind hypercorn."""
    lines = [
        "| target (issue 16) | goal | native | hypercorn | the floor's own figure |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in targets(results):
        x = "x" if t["ratio_to_floor"] else ""
        floor = "—" if t["floor"] is None else f"{t['floor']:.3g} {t['floor_unit']}"
        cells = []
        for path in ("native", "hypercorn"):
            value = t.get(path)
            verdict = "" if value is None else "met" if value <= t["goal"] else "NOT met"
            cells.append("—" if value is None else f"{value:.2f}{x} {verdict}")
        lines.append(f"| {t['target']} | <= {t['goal']:g}{x} | {cells[0]} | {cells[1]} | {floor} |")
    compared = [row for row in rows(results) if row.behind() is not None]
    behind = [row for row in compared if row.behind()]
    if compared:
        lines.append("")
        lines.append(
            f"native ahead of (or level with) hypercorn on {len(compared) - len(behind)} of "
            f"{len(compared)} figures" + ("; behind on:" if behind else "")
        )
        lines += [
            f"- {row.full_label}: native/hypercorn {fmt(row.ratio('native', 'hypercorn'))}"
            for row in behind
        ]
    return lines


def target_note(results: dict[str, Any]) -> str | None:
    """Whether the memory goal was met, if a memory scenario held exactly TARGET_STREAMS."""
    for key in ("memory_slow_small", "memory_slow_large"):
        native = results.get(key, {}).get("native")
        if native and native["open"] == TARGET_STREAMS:
            mb = native["rss_mib"] * 1024 * 1024 / 1e6
            verdict = "met" if mb < TARGET_RSS_MB else "NOT met"
            return (
                f"goal: {TARGET_STREAMS} concurrent slow streams in one proxy process under "
                f"{TARGET_RSS_MB} MB RSS (native server): {mb:.0f} MB "
                f"({native['rss_mib']:.0f} MiB), {verdict}"
            )
    return None


def table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| figure | direct | floor | native | hypercorn | native/floor | hypercorn/floor "
        "| native/hypercorn |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows(results):
        cells = [fmt(row.values.get(path), row.digits) for path in PATHS]
        ratios = [
            fmt(row.ratio("native", "floor")),
            fmt(row.ratio("hypercorn", "floor")),
            fmt(row.ratio("native", "hypercorn")),
        ]
        lines.append(f"| {row.label} | {' | '.join(cells)} | {' | '.join(ratios)} |")
    return lines


COLOURS = {"direct": "#1b9e77", "floor": "#7570b3", "native": "#d95f02", "hypercorn": "#e7298a"}


def plot(out: dict[str, Any], path: Path) -> str:
    """Bars per path, one small panel per main figure (own scale each); returns a note."""
    try:
        import matplotlib
    except ImportError:
        return "no plot: matplotlib is not installed (pip install -e '.[bench]')"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [row for row in rows(out["results"]) if row.panel and row.values]
    if not panels:
        return "no plot: no main figure in the results"
    columns = 4
    lines = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4 * columns, 3 * lines + 0.6), squeeze=False)
    for ax, row in zip(axes.flat, panels, strict=False):
        names = [p for p in PATHS if row.values.get(p) is not None]
        values = [float(row.values[p] or 0.0) for p in names]
        bars = ax.bar(names, values, color=[COLOURS[p] for p in names])
        ax.bar_label(bars, labels=[fmt(v, row.digits) for v in values], fontsize=7)
        title = [
            *textwrap.wrap(row.panel or row.label, 44),
            f"native/floor = {fmt(row.ratio('native', 'floor'))}, "
            f"hypercorn/floor = {fmt(row.ratio('hypercorn', 'floor'))}",
        ]
        ax.set_title("\n".join(title), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.margins(y=0.2)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        f"trioproxy bench ({out['mode']} run, {out['machine']['cpus']} CPUs, "
        f"calibration loop {out['calibration']['python_loop_1e6_ints_ms']:.0f} ms); "
        f"{out['wall_s']:.0f} s wall",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (3 * lines + 0.6)))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"plot in {path}"


def main() -> None:
    parser = argparse.ArgumentParser(description="trioproxy end-to-end benchmark")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller counts (about 2 minutes)")
    mode.add_argument(
        "--smoke", action="store_true", help="tiny counts, every scenario (about 20 s)"
    )
    parser.add_argument("--budget", type=float, default=900.0, help="overall seconds (default 900)")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results",
        help="directory for latest.json and latest.png (default bench/results)",
    )
    parser.add_argument("--no-plot", action="store_true", help="do not draw latest.png")
    parser.add_argument(
        "--paths",
        default=",".join(RELAYS),
        help=f"relays to run besides direct, comma-separated (default {','.join(RELAYS)})",
    )
    args = parser.parse_args()
    relays = tuple(p for p in RELAYS if p in args.paths.split(","))
    if unknown := set(args.paths.split(",")) - set(RELAYS):
        parser.error(f"unknown path(s) {sorted(unknown)}; choose from {', '.join(RELAYS)}")
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    calibration = calibrate()
    wall = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="trioproxy-bench-"))  # configs and logs, kept
    bench = Bench(mode_name, args.budget, tmp, relays)
    trio.run(bench.main)
    out = {
        "mode": mode_name,
        "quick": args.quick,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "calibration": {"python_loop_1e6_ints_ms": calibration},
        "wall_s": time.monotonic() - wall,
        "logs": str(tmp),
        "sizes": bench.size,
        "paths": ["direct", *relays],
        "paths_left_out": bench.paths_left_out,
        "results": bench.results,
        "omitted": bench.omitted,
        "targets": targets(bench.results),
        "goal": target_note(bench.results),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(out, indent=2) + "\n")
    print("\n".join(table(bench.results)))
    print()
    print("\n".join(target_lines(bench.results)))
    if out["goal"]:
        print(f"\n{out['goal']}")
    for name, why in bench.paths_left_out.items():
        print(f"\nleft out: path {name}: {why}")
    for name, why in bench.omitted.items():
        print(f"\nleft out: {name}: {why}")
    for name, result in bench.results.items():
        for path in PATHS:
            failed = result.get(path, {}).get("failed", {})
            dropped = result.get(path, {}).get("dropped_before_close", {})
            if failed or dropped:
                print(f"\nnote: {name} {path}: failed to open {failed}, ended early {dropped}")
        if result.get("listen_overflows", 0) > 0:
            print(
                f"\nnote: {name}: the kernel dropped {result['listen_overflows']} connects on a "
                "full accept queue (each waits >= 1 s for a retry)"
            )
    print(
        f"\nmachine speed: a pure-Python loop adding up 10^6 ints takes {calibration:.0f} ms "
        "(best of 3, in the load generator before the run; lower = faster machine)"
    )
    print(
        f"{mode_name} run, {out['wall_s']:.0f} s wall, {out['machine']['cpus']} CPUs; "
        f"JSON in {args.out / 'latest.json'}"
    )
    if not args.no_plot:
        print(plot(out, args.out / "latest.png"))


if __name__ == "__main__":
    main()
