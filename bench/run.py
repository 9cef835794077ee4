"""End-to-end benchmark: trioproxy (a separate process) against a fake Anthropic upstream.

Stage: benchmark harness only. Run from the repository root:
`python bench/run.py [--quick | --smoke] [--out DIR] [--no-plot]`.

Three processes, loopback only:
- the fake upstream (`bench/fake_upstream.py`, its own process);
- trioproxy (`python -m trioproxy --config <tmp ini>`, its own process, so its CPU time can be read
  from /proc/<pid>/stat and its RSS from /proc/<pid>/status);
- the load generator (this process), built on trioproxy's own `HTTPClient`.
The memory scenarios start a fresh fake and a fresh proxy of their own, so that the RSS before
them is not inflated (nor the growth hidden) by what earlier scenarios left in the allocator.

Every scenario runs twice in the same run: "direct" (load generator -> fake, speaking Anthropic
Messages) and "proxy" (load generator -> trioproxy -> fake, the client speaking OpenAI chat).
Writes DIR/latest.json (default bench/results), prints a markdown table, and draws DIR/latest.png
when matplotlib is importable. Counts are fixed and every scenario has a time budget; a scenario
that overruns it is reported as left out, never estimated.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trioproxy.upstream import HTTPClient, PoolLimits, Timeouts  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
TIMEOUTS = Timeouts(connect=5.0, read=30.0, total=60.0)
# Held slow streams live as long as their scenario; connect is generous because a connect that
# overflows a listen backlog is retried by the kernel after 1 s, then 3 s.
HOLD_TIMEOUTS = Timeouts(connect=10.0, read=30.0, total=None)
CONFIG = """\
[proxy]
listen = 127.0.0.1:{proxy_port}
log_level = info
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

MODES = ("full", "quick", "smoke")
# (full, quick, smoke) sizes
SIZES = {
    "c1_requests": (2000, 300, 20),
    "c32_requests": (10000, 2000, 64),
    "c256_requests": (5000, 1000, 256),
    "ttfb_requests": (500, 100, 10),
    "paced_streams": (640, 128, 32),
    "long_streams": (20, 4, 1),
    "many_streams": (64, 32, 4),
    "cancel_runs": (50, 50, 5),
    "memory_small": (1000, 200, 10),
    "memory_large": (5000, 1000, 20),
    "slow_delta_ms": (5000, 2000, 100),
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
# The goal this bench checks: 5,000 concurrent slow streams in one proxy process under 400 MB RSS.
TARGET_STREAMS, TARGET_RSS_MB = 5000, 400


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


class Target:
    """One way to reach the fake: direct (Anthropic body) or through the proxy (chat body)."""

    def __init__(self, name: str, base: str, proxied: bool) -> None:
        self.name = name
        self.proxied = proxied
        self.url = base + ("/v1/chat/completions" if proxied else "/v1/messages")
        self.headers = [("content-type", "application/json")]
        if not proxied:
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
) -> dict[str, Any]:
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
    wall = time.perf_counter() - start
    return {
        "requests": len(latencies),
        "concurrency": concurrency,
        "wall_s": wall,
        "per_s": len(latencies) / wall,
        "p50_ms": pct(latencies, 50) * 1000,
        "p99_ms": pct(latencies, 99) * 1000,
    }


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
    client: HTTPClient, target: Target, n: int, pid: int, delta_ms: int, measure: bool = True
) -> dict[str, Any]:
    """Hold `n` slow streams open at the same time and read the RSS of `pid`, the process that
    serves them (the proxy, or the fake for "direct").

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


async def wait_ready(client: HTTPClient, url: str, deadline: float) -> float:
    """Poll `url` until it answers 200; return the monotonic time it first did."""
    quick = Timeouts(connect=0.5, read=2.0, total=2.0)
    while time.monotonic() < deadline:
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
class Servers:
    """A fake upstream and a trioproxy in front of it, both running."""

    fake: trio.Process
    proxy: trio.Process
    fake_base: str
    proxy_base: str
    time_to_ready_ms: float


class Bench:
    def __init__(self, mode: str, budget: float, tmp: Path) -> None:
        self.mode = mode
        column = MODES.index(mode)
        self.size = {name: sizes[column] for name, sizes in SIZES.items()}
        self.deadline = time.monotonic() + budget
        self.tmp = tmp
        self.env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        self.env["PYTHONPATH"] = str(ROOT)
        self.procs: list[trio.Process] = []
        self.results: dict[str, Any] = {}
        self.omitted: dict[str, str] = {}

    async def scenario(self, name: str, seconds: float, coro_fn: Any) -> None:
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

    async def start_servers(self, client: HTTPClient, tag: str) -> Servers:
        """Start a fake and a proxy in front of it (logs in the temp dir, named by `tag`)."""
        fake_port, proxy_port = free_port(), free_port()
        ini = self.tmp / f"{tag}.ini"
        ini.write_text(CONFIG.format(proxy_port=proxy_port, fake_port=fake_port))
        fake = await trio.lowlevel.open_process(
            [sys.executable, str(ROOT / "bench" / "fake_upstream.py"), "--port", str(fake_port)],
            env=self.env,
        )
        self.procs.append(fake)
        fake_base = f"http://127.0.0.1:{fake_port}"
        await wait_ready(client, fake_base + "/_health", time.monotonic() + 20)
        started = time.monotonic()
        with (self.tmp / f"{tag}.log").open("wb") as log:  # the child keeps its own copy
            proxy = await trio.lowlevel.open_process(
                [sys.executable, "-m", "trioproxy", "--config", str(ini)],
                env=self.env,
                cwd=self.tmp,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proxy)
        proxy_base = f"http://127.0.0.1:{proxy_port}"
        ready = await wait_ready(client, proxy_base + "/health", started + 30)
        return Servers(fake, proxy, fake_base, proxy_base, (ready - started) * 1000)

    async def stop(self, procs: list[trio.Process]) -> None:
        with trio.CancelScope(shield=True):
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                with trio.move_on_after(15):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                self.procs.remove(proc)

    async def memory(self, n: int) -> dict[str, Any]:
        """Memory per open slow stream, on a fresh fake and proxy (see hold_slow_streams).

        "direct" holds the streams on the fake itself, so its figures are the fake's RSS: the
        floor of one trio task + one socket per stream in a minimal server, not the proxy's.
        """
        client = HTTPClient(environ={})
        servers: Servers | None = None
        try:
            servers = await self.start_servers(client, f"memory-{n}")
            delta_ms = self.size["slow_delta_ms"]
            out: dict[str, Any] = {
                "streams": n,
                "delta_interval_ms": delta_ms,
                "opener_concurrency": OPENERS,
                "warmup_streams": MEMORY_WARMUP,
            }
            for target, pid in (
                (Target("direct", servers.fake_base, proxied=False), servers.fake.pid),
                (Target("proxy", servers.proxy_base, proxied=True), servers.proxy.pid),
            ):
                await hold_slow_streams(client, target, MEMORY_WARMUP, pid, delta_ms, measure=False)
                out[target.name] = await hold_slow_streams(client, target, n, pid, delta_ms)
                out[target.name]["measured_process"] = (
                    "proxy" if target.proxied else "fake upstream"
                )
            return out
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()
            if servers is not None:
                await self.stop([servers.fake, servers.proxy])

    async def main(self) -> None:
        client = HTTPClient(pool=PoolLimits(max_idle=GENERATOR_IDLE), environ={})
        try:
            servers = await self.start_servers(client, "proxy")
            fake, proxy, fake_base = servers.fake, servers.proxy, servers.fake_base
            self.results["startup"] = {"time_to_ready_ms": servers.time_to_ready_ms}
            await trio.sleep(0.5)
            self.results["startup"]["idle_rss_mib"] = rss_kib(proxy.pid) / 1024
            self.results["startup"]["fake_idle_rss_mib"] = rss_kib(fake.pid) / 1024

            direct = Target("direct", fake_base, proxied=False)
            proxied = Target("proxy", servers.proxy_base, proxied=True)
            both = (direct, proxied)
            # warm up both paths (connections, imports, first-request caches)
            for target in both:
                await run_load(client, target, "bench-s5-d0", False, 50, 4)
                await run_load(client, target, "bench-s5-d0", True, 20, 4)

            size = self.size
            for concurrency, key in NONSTREAM:

                async def nonstream(c: int = concurrency, n: int = size[key]) -> dict[str, Any]:
                    """Non-streaming requests back to back at concurrency c. Before measuring,
                    the generator's c connections are opened (see open_connections), so that the
                    measurement reuses them (connections opened during it are reported)."""
                    out: dict[str, Any] = {}
                    for target in both:
                        await open_connections(client, target, c)
                        before = cpu_seconds(proxy.pid)
                        fake_before = cpu_seconds(fake.pid)
                        opened_before = client.statistics().opened
                        accepted_before = (await fake_stats(client, fake_base))["accepted"]
                        out[target.name] = result = await run_load(
                            client, target, "bench-s0-d0", False, n, c
                        )
                        cpu = cpu_seconds(proxy.pid) - before
                        result["fake_cpu_ms_per_request"] = (
                            (cpu_seconds(fake.pid) - fake_before) * 1000 / n
                        )
                        result["client_connections_opened"] = (
                            client.statistics().opened - opened_before
                        )
                        # the stats request itself may open one connection to the fake
                        result["fake_connections_accepted"] = (await fake_stats(client, fake_base))[
                            "accepted"
                        ] - accepted_before
                        if target.proxied:
                            result["proxy_cpu_ms_per_request"] = cpu * 1000 / n
                    return out

                await self.scenario(f"nonstream_c{concurrency}", 60, nonstream)

            async def ttfb() -> dict[str, Any]:
                out: dict[str, Any] = {}
                for target in both:
                    times = [
                        await first_byte(client, target, "bench-s5-d0")
                        for _ in range(size["ttfb_requests"])
                    ]
                    out[target.name] = {
                        "requests": len(times),
                        "p50_ms": pct(times, 50) * 1000,
                        "p99_ms": pct(times, 99) * 1000,
                    }
                return out

            await self.scenario("stream_ttfb_c1", 30, ttfb)

            async def streams(
                model: str, count: int, concurrency: int, chunks: int
            ) -> dict[str, Any]:
                """`count` streams of `chunks` deltas at `concurrency`, both paths; chunks/s is
                every delta relayed over the wall time; proxy CPU per chunk is the proxy's CPU
                over the scenario / (streams x chunks), per-request work included."""
                out: dict[str, Any] = {}
                for target in both:
                    before = cpu_seconds(proxy.pid)
                    fake_before = cpu_seconds(fake.pid)
                    out[target.name] = result = await run_load(
                        client, target, model, True, count, concurrency
                    )
                    cpu = cpu_seconds(proxy.pid) - before
                    result["chunks_per_stream"] = chunks
                    result["chunks_per_s"] = count * chunks / result["wall_s"]
                    # The fake's own CPU per chunk it sends: the floor for producing a chunk
                    # (a wake-up, a format, a send) on this machine, for scale.
                    result["fake_cpu_us_per_chunk"] = (
                        (cpu_seconds(fake.pid) - fake_before) * 1e6 / (count * chunks)
                    )
                    if target.proxied:
                        result["proxy_cpu_s"] = cpu
                        result["proxy_cpu_us_per_chunk"] = cpu * 1e6 / (count * chunks)
                return out

            await self.scenario(
                "stream_c32_20x10ms",
                40,
                lambda: streams(
                    f"bench-s{PACED_CHUNKS}-d10", size["paced_streams"], 32, PACED_CHUNKS
                ),
            )

            async def relay_floor() -> dict[str, Any]:
                """The paced streams again, through a bare trio TCP relay (bench/relay.py) in
                front of the fake: its CPU per chunk is the floor of relaying one chunk."""
                port = free_port()
                relay = await trio.lowlevel.open_process(
                    [
                        sys.executable,
                        str(ROOT / "bench" / "relay.py"),
                        "--port",
                        str(port),
                        "--upstream-port",
                        fake_base.rsplit(":", 1)[1],
                    ],
                    env=self.env,
                )
                self.procs.append(relay)
                try:
                    relay_base = f"http://127.0.0.1:{port}"
                    await wait_ready(client, relay_base + "/_health", time.monotonic() + 20)
                    target = Target("relay", relay_base, proxied=False)
                    await run_load(client, target, "bench-s5-d0", True, 20, 4)  # warm-up
                    count = size["paced_streams"]
                    before, fake_before = cpu_seconds(relay.pid), cpu_seconds(fake.pid)
                    result = await run_load(
                        client, target, f"bench-s{PACED_CHUNKS}-d10", True, count, 32
                    )
                    chunks = count * PACED_CHUNKS
                    result["relay_cpu_us_per_chunk"] = (
                        (cpu_seconds(relay.pid) - before) * 1e6 / chunks
                    )
                    result["fake_cpu_us_per_chunk"] = (
                        (cpu_seconds(fake.pid) - fake_before) * 1e6 / chunks
                    )
                    return result
                finally:
                    await self.stop([relay])

            await self.scenario("relay_floor_c32_20x10ms", 40, relay_floor)
            await self.scenario(
                "stream_2000_unpaced",
                40,
                lambda: streams(f"bench-s{LONG_CHUNKS}-d0", size["long_streams"], 1, LONG_CHUNKS),
            )
            await self.scenario(
                "stream_2000_unpaced_c32",
                60,
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
                        client, target, fake_base, size["cancel_runs"]
                    )
                    for target in both
                }

            await self.scenario("cancel_to_upstream_eof", 40, cancel)
            self.results["after"] = {
                "proxy_rss_mib": rss_kib(proxy.pid) / 1024,
                "proxy_cpu_total_s": cpu_seconds(proxy.pid),
            }
            for key, seconds in (("memory_small", 60), ("memory_large", 150)):
                n = size[key]
                await self.scenario(
                    key.replace("memory_", "memory_slow_"), seconds, lambda n=n: self.memory(n)
                )
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()
            await self.stop(list(self.procs))


@dataclass
class Row:
    """One line of the table; `panel` names its panel in the plot (main figures only)."""

    label: str
    proxy: float | None
    direct: float | None
    digits: int = 2
    panel: str | None = None

    @property
    def ratio(self) -> float | None:
        return self.proxy / self.direct if self.proxy is not None and self.direct else None


def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def rows(results: dict[str, Any]) -> list[Row]:
    """The table's rows, in order; a scenario that is missing contributes none."""
    out: list[Row] = []

    def add(
        label: str,
        proxy: float | None,
        direct: float | None,
        digits: int = 2,
        panel: str | None = None,
    ) -> None:
        out.append(Row(label, proxy, direct, digits, panel))

    def add_cpu_per_chunk(p: dict[str, Any], d: dict[str, Any], note: str = "") -> None:
        # direct column: the fake's own CPU per chunk it sent, for scale
        add(
            f"  same: proxy CPU per relayed chunk{note} (µs)",
            p["proxy_cpu_us_per_chunk"],
            d["fake_cpu_us_per_chunk"],
            1,
        )

    r = results
    if "startup" in r:
        add("time to ready after start (ms)", r["startup"]["time_to_ready_ms"], None, 0)
        add("idle RSS (MiB)", r["startup"]["idle_rss_mib"], None, 1)
    for c, _ in NONSTREAM:
        s = r.get(f"nonstream_c{c}")
        if s:
            p, d = s["proxy"], s["direct"]
            add(
                f"non-streaming c={c}: req/s",
                p["per_s"],
                d["per_s"],
                0,
                f"non-streaming c={c}: req/s",
            )
            add(
                f"non-streaming c={c}: p50 latency (ms)",
                p["p50_ms"],
                d["p50_ms"],
                2,
                "non-streaming c=1: p50 latency (ms)" if c == 1 else None,
            )
            add(f"non-streaming c={c}: p99 latency (ms)", p["p99_ms"], d["p99_ms"])
            if c == 1:
                add("added latency p50, c=1 (ms)", p["p50_ms"] - d["p50_ms"], None, 3)
            add(
                f"proxy CPU per non-streaming request, c={c} (ms)",
                p["proxy_cpu_ms_per_request"],
                None,
                3,
            )
            add(
                f"  same: connections opened to the fake per 1000 requests, c={c}",
                p["fake_connections_accepted"] * 1000 / p["requests"],
                d["fake_connections_accepted"] * 1000 / d["requests"],
                0,
            )
    s = r.get("stream_ttfb_c1")
    if s:
        add(
            "streaming time to first data byte p50, c=1 (ms)",
            s["proxy"]["p50_ms"],
            s["direct"]["p50_ms"],
            2,
            "streaming: time to first data byte p50, c=1 (ms)",
        )
    s = r.get("stream_c32_20x10ms")
    if s:
        p, d = s["proxy"], s["direct"]
        add(
            "32 concurrent streams, 20 chunks 10 ms apart: streams/s",
            p["per_s"],
            d["per_s"],
            1,
            "32 concurrent paced streams (20 chunks 10 ms apart): streams/s",
        )
        add("  same: p50 stream duration (ms)", p["p50_ms"], d["p50_ms"], 1)
        add_cpu_per_chunk(p, d, ", per-request cost included")
    s = r.get("relay_floor_c32_20x10ms")
    if s:
        add(
            "  same streams through a bare trio TCP relay (bench/relay.py, no parsing): relay CPU"
            " per relayed chunk (µs; direct = the fake's)",
            s["relay_cpu_us_per_chunk"],
            s["fake_cpu_us_per_chunk"],
            1,
            "bare trio relay, same paced streams: CPU per chunk (µs)",
        )
    s = r.get("stream_2000_unpaced")
    if s:
        p, d = s["proxy"], s["direct"]
        add(
            "2000-chunk stream unpaced, one at a time: duration p50 (ms)",
            p["p50_ms"],
            d["p50_ms"],
            1,
        )
        add(
            "  same: chunks/s",
            p["chunks_per_s"],
            d["chunks_per_s"],
            0,
            "one unpaced stream at a time: chunks/s",
        )
        add_cpu_per_chunk(p, d)
    s = r.get("stream_2000_unpaced_c32")
    if s:
        p, d = s["proxy"], s["direct"]
        c = p["concurrency"]
        add(
            f"{c} concurrent 2000-chunk streams unpaced: chunks/s, all streams",
            p["chunks_per_s"],
            d["chunks_per_s"],
            0,
            f"{c} concurrent unpaced streams: chunks/s, all streams",
        )
        add_cpu_per_chunk(p, d)
    s = r.get("cancel_to_upstream_eof")
    if s:
        add(
            "client disconnect -> upstream EOF p50 (ms)",
            s["proxy"]["p50_ms"],
            s["direct"]["p50_ms"],
            3,
            "client disconnect -> upstream EOF p50 (ms)",
        )
        add(
            "client disconnect -> upstream EOF p99 (ms)",
            s["proxy"]["p99_ms"],
            s["direct"]["p99_ms"],
            3,
        )
    for key in ("memory_slow_small", "memory_slow_large"):
        s = r.get(key)
        if s:
            p, d = s["proxy"], s["direct"]
            n = s["streams"]
            held = p["open_at_measurement"], d["open_at_measurement"]
            opened = (
                f"{n}"
                if held == (n, n)
                else f"{n} asked, {held[0]} (proxy) / {held[1]} (direct) open"
            )
            add(
                f"{opened} slow streams open: RSS (MiB; direct = the fake's)",
                p["rss_mib"],
                d["rss_mib"],
                1,
                f"{opened} slow streams open: RSS (MiB; direct = the fake upstream's)"
                if key == "memory_slow_large"
                else None,
            )
            add(
                "  same: RSS per open stream (KiB; direct = the fake's)",
                p["rss_per_stream_kib"],
                d["rss_per_stream_kib"],
                1,
                f"{opened} slow streams: RSS per open stream (KiB; direct = the fake's)",
            )
            add(
                f"  same: CPU while held, 1 delta per {s['delta_interval_ms'] / 1000:g} s each "
                "(% of a core)",
                p["cpu_while_held_pct"],
                d["cpu_while_held_pct"],
                0,
            )
            add(
                "  same: CPU per relayed delta while held (µs; direct = the fake's per sent delta)",
                p["cpu_us_per_delta"],
                d["cpu_us_per_delta"],
                0,
            )
            add(
                "  same: time to open them all (s)",
                p["time_to_open_all_s"],
                d["time_to_open_all_s"],
                2,
            )
            add(
                "  same: all closed -> server fds back to before (ms)",
                p["release_ms"],
                d["release_ms"],
                0,
            )
    return out


def target_note(results: dict[str, Any]) -> str | None:
    """Whether the memory goal was met, if a memory scenario held exactly TARGET_STREAMS."""
    for key in ("memory_slow_small", "memory_slow_large"):
        proxy = results.get(key, {}).get("proxy")
        if proxy and proxy["open"] == TARGET_STREAMS:
            mb = proxy["rss_mib"] * 1024 * 1024 / 1e6
            verdict = "met" if mb < TARGET_RSS_MB else "NOT met"
            return (
                f"goal: {TARGET_STREAMS} concurrent slow streams in one proxy process under "
                f"{TARGET_RSS_MB} MB RSS: {mb:.0f} MB ({proxy['rss_mib']:.0f} MiB), {verdict}"
            )
    return None


def table(results: dict[str, Any]) -> list[str]:
    lines = ["| figure | proxy | direct | ratio proxy/direct |", "|---|---:|---:|---:|"]
    for row in rows(results):
        lines.append(
            f"| {row.label} | {fmt(row.proxy, row.digits)} | {fmt(row.direct, row.digits)} "
            f"| {fmt(row.ratio)} |"
        )
    return lines


def plot(out: dict[str, Any], path: Path) -> str:
    """Bars proxy vs direct, one small panel per main figure (own scale each); returns a note."""
    try:
        import matplotlib
    except ImportError:
        return "no plot: matplotlib is not installed (pip install -e '.[bench]')"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [row for row in rows(out["results"]) if row.panel and row.proxy is not None]
    if not panels:
        return "no plot: no main figure in the results"
    columns = 4
    lines = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4 * columns, 3 * lines + 0.6), squeeze=False)
    for ax, row in zip(axes.flat, panels, strict=False):
        label = row.panel or row.label
        values = [row.proxy or 0.0, row.direct or 0.0]
        bars = ax.bar(["proxy", "direct"], values, color=["#d95f02", "#1b9e77"])
        ax.bar_label(bars, labels=[fmt(v, row.digits) for v in values], fontsize=8)
        title = [*textwrap.wrap(label, 44), f"proxy/direct = {fmt(row.ratio)}"]
        ax.set_title("\n".join(title), fontsize=8)
        ax.tick_params(labelsize=8)
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
    mode.add_argument("--quick", action="store_true", help="smaller counts (about a minute)")
    mode.add_argument(
        "--smoke", action="store_true", help="tiny counts, every scenario (about 10 s)"
    )
    parser.add_argument("--budget", type=float, default=240.0, help="overall seconds (default 240)")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results",
        help="directory for latest.json and latest.png (default bench/results)",
    )
    parser.add_argument("--no-plot", action="store_true", help="do not draw latest.png")
    args = parser.parse_args()
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    calibration = calibrate()
    wall = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="trioproxy-bench-"))  # configs and proxy logs, kept
    bench = Bench(mode_name, args.budget, tmp)
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
        "results": bench.results,
        "omitted": bench.omitted,
        "goal": target_note(bench.results),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(out, indent=2) + "\n")
    print("\n".join(table(bench.results)))
    if out["goal"]:
        print(f"\n{out['goal']}")
    for name, why in bench.omitted.items():
        print(f"\nleft out: {name}: {why}")
    for name, result in bench.results.items():
        for path in ("direct", "proxy"):
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
