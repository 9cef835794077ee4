"""End-to-end benchmark: trioproxy (a separate process) against a fake Anthropic upstream.

Stage: benchmark harness only. Run from the repository root: `python bench/run.py [--quick]`.

Three processes, loopback only:
- the fake upstream (`bench/fake_upstream.py`, its own process);
- trioproxy (`python -m trioproxy --config <tmp ini>`, its own process, so its CPU time can be read
  from /proc/<pid>/stat and its RSS from /proc/<pid>/status);
- the load generator (this process), built on trioproxy's own `HTTPClient`.

Every scenario runs twice in the same run: "direct" (load generator -> fake, speaking Anthropic
Messages) and "proxy" (load generator -> trioproxy -> fake, the client speaking OpenAI chat).
Writes bench/results/latest.json and prints a markdown table. Counts are fixed and every scenario
has a time budget; a scenario that overruns it is reported as left out, never estimated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trioproxy.upstream import HTTPClient, Timeouts  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
TIMEOUTS = Timeouts(connect=5.0, read=30.0, total=60.0)
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

# (full, quick) sizes
SIZES = {
    "c1_requests": (2000, 300),
    "c32_requests": (10000, 2000),
    "ttfb_requests": (500, 100),
    "paced_streams": (640, 128),
    "long_streams": (20, 4),
    "cancel_runs": (50, 50),
}


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


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


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


class Bench:
    def __init__(self, quick: bool, budget: float) -> None:
        self.quick = quick
        self.size = {name: sizes[1 if quick else 0] for name, sizes in SIZES.items()}
        self.deadline = time.monotonic() + budget
        self.results: dict[str, Any] = {}
        self.omitted: dict[str, str] = {}

    async def scenario(self, name: str, seconds: float, coro_fn: Any) -> None:
        left = self.deadline - time.monotonic()
        if left < 1:
            self.omitted[name] = "no time left in the overall budget"
            return
        with trio.move_on_after(min(seconds, left)) as scope:
            self.results[name] = await coro_fn()
        if scope.cancelled_caught:
            self.results.pop(name, None)
            self.omitted[name] = f"did not finish within {min(seconds, left):.0f} s"
        print(f"  {name}: {'done' if name in self.results else 'left out'}", file=sys.stderr)

    async def main(self) -> None:
        fake_port, proxy_port = free_port(), free_port()
        tmp = Path(tempfile.mkdtemp(prefix="trioproxy-bench-"))
        ini = tmp / "bench.ini"
        ini.write_text(CONFIG.format(proxy_port=proxy_port, fake_port=fake_port))
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env["PYTHONPATH"] = str(ROOT)
        procs: list[trio.Process] = []
        client = HTTPClient(max_idle_per_origin=64, environ={})
        try:
            fake = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    str(ROOT / "bench" / "fake_upstream.py"),
                    "--port",
                    str(fake_port),
                ],
                env=env,
            )
            procs.append(fake)
            fake_base = f"http://127.0.0.1:{fake_port}"
            await wait_ready(client, fake_base + "/_health", time.monotonic() + 20)

            started = time.monotonic()
            proxy_log = (tmp / "proxy.log").open("wb")
            proxy = await trio.lowlevel.open_process(
                [sys.executable, "-m", "trioproxy", "--config", str(ini)],
                env=env,
                cwd=tmp,
                stdout=proxy_log,
                stderr=subprocess.STDOUT,
            )
            procs.append(proxy)
            proxy_base = f"http://127.0.0.1:{proxy_port}"
            ready = await wait_ready(client, proxy_base + "/health", started + 30)
            self.results["startup"] = {"time_to_ready_ms": (ready - started) * 1000}
            await trio.sleep(0.5)
            self.results["startup"]["idle_rss_mib"] = rss_kib(proxy.pid) / 1024
            self.results["startup"]["fake_idle_rss_mib"] = rss_kib(fake.pid) / 1024

            direct = Target("direct", fake_base, proxied=False)
            proxied = Target("proxy", proxy_base, proxied=True)
            both = (direct, proxied)
            # warm up both paths (connections, imports, first-request caches)
            for target in both:
                await run_load(client, target, "bench-s5-d0", False, 50, 4)
                await run_load(client, target, "bench-s5-d0", True, 20, 4)

            size = self.size
            for concurrency, key in ((1, "c1_requests"), (32, "c32_requests")):

                async def nonstream(c: int = concurrency, n: int = size[key]) -> dict[str, Any]:
                    out: dict[str, Any] = {}
                    for target in both:
                        before = cpu_seconds(proxy.pid)
                        fake_before = cpu_seconds(fake.pid)
                        out[target.name] = await run_load(
                            client, target, "bench-s0-d0", False, n, c
                        )
                        cpu = cpu_seconds(proxy.pid) - before
                        out[target.name]["fake_cpu_ms_per_request"] = (
                            (cpu_seconds(fake.pid) - fake_before) * 1000 / n
                        )
                        if target.proxied:
                            out[target.name]["proxy_cpu_ms_per_request"] = cpu * 1000 / n
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

            async def paced() -> dict[str, Any]:
                out: dict[str, Any] = {}
                for target in both:
                    out[target.name] = await run_load(
                        client, target, "bench-s20-d10", True, size["paced_streams"], 32
                    )
                return out

            await self.scenario("stream_c32_20x10ms", 40, paced)

            async def long_stream() -> dict[str, Any]:
                out: dict[str, Any] = {}
                chunks = 2000
                n = size["long_streams"]
                for target in both:
                    before = cpu_seconds(proxy.pid)
                    out[target.name] = await run_load(
                        client, target, f"bench-s{chunks}-d0", True, n, 1
                    )
                    cpu = cpu_seconds(proxy.pid) - before
                    out[target.name]["chunks_per_stream"] = chunks
                    if target.proxied:
                        out[target.name]["proxy_cpu_s"] = cpu
                        out[target.name]["proxy_cpu_us_per_chunk"] = cpu * 1e6 / (n * chunks)
                return out

            await self.scenario("stream_2000_unpaced", 40, long_stream)

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
        finally:
            await client.aclose()
            with trio.CancelScope(shield=True):
                for proc in reversed(procs):
                    proc.terminate()
                for proc in procs:
                    with trio.move_on_after(15):
                        await proc.wait()
                    if proc.returncode is None:
                        proc.kill()
                        await proc.wait()


def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(results: dict[str, Any]) -> list[str]:
    rows: list[tuple[str, float | None, float | None, float | None, int]] = []

    def add(label: str, proxy: float | None, direct: float | None, digits: int = 2) -> None:
        ratio = proxy / direct if proxy is not None and direct else None
        rows.append((label, proxy, direct, ratio, digits))

    r = results
    if "startup" in r:
        add("time to ready after start (ms)", r["startup"]["time_to_ready_ms"], None, 0)
        add("idle RSS (MiB)", r["startup"]["idle_rss_mib"], None, 1)
    for c in (1, 32):
        s = r.get(f"nonstream_c{c}")
        if s:
            p, d = s["proxy"], s["direct"]
            add(f"non-streaming c={c}: req/s", p["per_s"], d["per_s"], 0)
            add(f"non-streaming c={c}: p50 latency (ms)", p["p50_ms"], d["p50_ms"])
            add(f"non-streaming c={c}: p99 latency (ms)", p["p99_ms"], d["p99_ms"])
            if c == 1:
                add("added latency p50, c=1 (ms)", p["p50_ms"] - d["p50_ms"], None, 3)
            add(
                f"proxy CPU per non-streaming request, c={c} (ms)",
                p["proxy_cpu_ms_per_request"],
                None,
                3,
            )
    s = r.get("stream_ttfb_c1")
    if s:
        add(
            "streaming time to first data byte p50, c=1 (ms)",
            s["proxy"]["p50_ms"],
            s["direct"]["p50_ms"],
        )
    s = r.get("stream_c32_20x10ms")
    if s:
        add(
            "32 concurrent streams, 20 chunks 10 ms apart: streams/s",
            s["proxy"]["per_s"],
            s["direct"]["per_s"],
            1,
        )
        add("  same: p50 stream duration (ms)", s["proxy"]["p50_ms"], s["direct"]["p50_ms"], 1)
    s = r.get("stream_2000_unpaced")
    if s:
        add(
            "2000-chunk stream unpaced: duration p50 (ms)",
            s["proxy"]["p50_ms"],
            s["direct"]["p50_ms"],
            1,
        )
        add("proxy CPU per relayed chunk (µs)", s["proxy"]["proxy_cpu_us_per_chunk"], None, 1)
    s = r.get("cancel_to_upstream_eof")
    if s:
        add(
            "client disconnect -> upstream EOF p50 (ms)",
            s["proxy"]["p50_ms"],
            s["direct"]["p50_ms"],
            3,
        )
        add(
            "client disconnect -> upstream EOF p99 (ms)",
            s["proxy"]["p99_ms"],
            s["direct"]["p99_ms"],
            3,
        )
    lines = ["| figure | proxy | direct | ratio proxy/direct |", "|---|---:|---:|---:|"]
    for label, proxy, direct, ratio, digits in rows:
        lines.append(f"| {label} | {fmt(proxy, digits)} | {fmt(direct, digits)} | {fmt(ratio)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description="trioproxy end-to-end benchmark")
    parser.add_argument("--quick", action="store_true", help="smaller counts (about 10 s)")
    parser.add_argument("--budget", type=float, default=150.0, help="overall seconds (default 150)")
    args = parser.parse_args()
    bench = Bench(args.quick, args.budget)
    wall = time.monotonic()
    trio.run(bench.main)
    out = {
        "quick": args.quick,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "wall_s": time.monotonic() - wall,
        "sizes": bench.size,
        "results": bench.results,
        "omitted": bench.omitted,
    }
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / "latest.json").write_text(json.dumps(out, indent=2) + "\n")
    print("\n".join(table(bench.results)))
    for name, why in bench.omitted.items():
        print(f"\nleft out: {name}: {why}")
    print(
        f"\n{'quick' if args.quick else 'full'} run, {out['wall_s']:.0f} s wall, "
        f"{out['machine']['cpus']} CPUs; JSON in bench/results/latest.json"
    )


if __name__ == "__main__":
    main()
