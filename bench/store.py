"""What the shared store costs a request: `store = redis` beside `store = memory`, in one run.

Stage: benchmark harness only. Run from the repository root: `python bench/store.py [--requests N]
[--rounds R] [--out DIR]`. Needs `redis-server` on the PATH and coredis (the `redis` extra).

Processes, loopback only: a redis-server (no persistence), two trioproxy daemons on the built-in
demo upstream (no network, a tiny non-streaming answer) that differ only in `[proxy] store`, and
this load generator. The client key has all three limits (`rpm`, `max_concurrent`, `tpm`), so
every request on the redis path pays the admission round trip (one Lua script) and its release
and token charge (carried by the next admission, or batched in the background: off the request
path). One keep-alive connection per daemon, one request at a
time (c=1: latency, not throughput); the measured requests are split into rounds that alternate
the two daemons, so a slow spell of this shared machine lands on both.

Reported: p50 and p99 latency at the client, the daemon's CPU per request (utime + stime from
/proc/<pid>/stat, so the generator's own CPU is not counted), redis-server's CPU per request, the
added p50 (redis - memory, target under 0.3 ms on loopback, issue 22) and the ratios
redis/memory. Writes DIR/store.json (default bench/results).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h11
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from run import calibrate  # noqa: E402  (bench/run.py, beside this script)

from tests.redis_server import REDIS_SERVER, RedisServer, free_port  # noqa: E402

KEY = "sk-bench-0123456789abcdef"
TICKS = os.sysconf("SC_CLK_TCK")
BODY = json.dumps(
    {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
).encode()


def _ini(port: int, store: str) -> str:
    return f"""
[proxy]
listen = 127.0.0.1:{port}
store = {store}
store_timeout = 50
log_level = warning

[key:bench]
key = {KEY}
rpm = 100000000
max_concurrent = 1000
tpm = 1000000000000

[upstream:demo]
type = demo
demo_delay = 0

[model:demo]
upstream = demo
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (proc(5))


class _Conn:
    """One keep-alive HTTP/1.1 connection, h11 as the client."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    async def post(self) -> int:
        headers = [
            ("host", "bench"),
            ("content-type", "application/json"),
            ("authorization", f"Bearer {KEY}"),
            ("content-length", str(len(BODY))),
        ]
        out = self.h11.send(
            h11.Request(method="POST", target="/v1/chat/completions", headers=headers)
        )
        out += self.h11.send(h11.Data(data=BODY)) + self.h11.send(h11.EndOfMessage())
        await self.stream.send_all(out)
        status = 0
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                self.h11.start_next_cycle()
                return status


async def _wait_up(port: int, proc: subprocess.Popen[bytes]) -> None:
    with trio.fail_after(30):
        while True:
            assert proc.poll() is None, f"trioproxy on {port} exited {proc.returncode}"
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.aclose()
                return
            except OSError:
                await trio.sleep(0.05)


async def _measure(args: argparse.Namespace, redis: RedisServer, tmp: Path) -> dict[str, object]:
    paths = {"memory": "memory", "redis": redis.url}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    conns: dict[str, _Conn] = {}
    try:
        for name, store in paths.items():
            port = free_port()
            ini = tmp / f"{name}.ini"
            ini.write_text(_ini(port, store))
            procs[name] = subprocess.Popen(  # noqa: ASYNC220  (started once, before timing)
                [sys.executable, "-m", "trioproxy", "--config", str(ini)],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=(tmp / f"{name}.log").open("wb"),
            )
            await _wait_up(port, procs[name])
            conns[name] = _Conn(await trio.open_tcp_stream("127.0.0.1", port))
        for conn in conns.values():  # warm up: connections, the store's scripts, caches
            for _ in range(200):
                assert await conn.post() == 200
        latency: dict[str, list[float]] = {name: [] for name in paths}
        cpu = dict.fromkeys(paths, 0.0)
        redis_cpu = 0.0
        assert redis.proc is not None
        per_round = max(1, args.requests // args.rounds)
        for _ in range(args.rounds):
            for name, conn in conns.items():
                pid = procs[name].pid
                cpu0, rcpu0 = _cpu_seconds(pid), _cpu_seconds(redis.proc.pid)
                for _ in range(per_round):
                    start = time.perf_counter()
                    status = await conn.post()
                    latency[name].append(time.perf_counter() - start)
                    assert status == 200, f"{name}: {status}"
                await trio.sleep(0.05)  # let the background releases land in this round
                cpu[name] += _cpu_seconds(pid) - cpu0
                if name == "redis":
                    redis_cpu += _cpu_seconds(redis.proc.pid) - rcpu0
        for conn in conns.values():
            await conn.stream.aclose()
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(10)
    count = per_round * args.rounds
    rows = {}
    for name in paths:
        ordered = sorted(latency[name])
        rows[name] = {
            "p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
            "cpu_ms_per_request": cpu[name] / count * 1000,
        }
    added = rows["redis"]["p50_ms"] - rows["memory"]["p50_ms"]
    return {
        "requests_per_path": count,
        "rounds": args.rounds,
        "paths": rows,
        "redis_server_cpu_ms_per_request": redis_cpu / count * 1000,
        "added_p50_ms": added,
        "added_cpu_ms_per_request": rows["redis"]["cpu_ms_per_request"]
        - rows["memory"]["cpu_ms_per_request"],
        "ratio_p50": rows["redis"]["p50_ms"] / rows["memory"]["p50_ms"],
        "ratio_cpu": rows["redis"]["cpu_ms_per_request"] / rows["memory"]["cpu_ms_per_request"],
        "target_added_p50_ms": 0.3,
        "met": added < 0.3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000, help="measured, per path")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if REDIS_SERVER is None:
        print("bench/store.py needs redis-server (apt-get install redis-server)", file=sys.stderr)
        return 2
    calibration = calibrate()  # before any process starts, as bench/run.py does
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        redis = RedisServer(tmp)
        redis.start()
        try:
            result = trio.run(_measure, args, redis, tmp)
        finally:
            redis.stop()
    result["calibration"] = {"python_loop_1e6_ints_ms": calibration}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "store.json").write_text(json.dumps(result, indent=2) + "\n")
    paths = result["paths"]
    assert isinstance(paths, dict)
    print("| store | p50 ms | p99 ms | proxy CPU ms/request |")
    print("|---|---|---|---|")
    for name, row in paths.items():
        print(
            f"| {name} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | "
            f"{row['cpu_ms_per_request']:.3f} |"
        )
    print(
        f"\nadded by redis: p50 {result['added_p50_ms']:.3f} ms (target < 0.3 ms: "
        f"{'met' if result['met'] else 'NOT met'}), proxy CPU "
        f"{result['added_cpu_ms_per_request']:.3f} ms/request, redis-server CPU "
        f"{result['redis_server_cpu_ms_per_request']:.3f} ms/request; ratios redis/memory: "
        f"p50 {result['ratio_p50']:.2f}, CPU {result['ratio_cpu']:.2f}; machine speed "
        f"(bench/run.py's calibration loop) {calibration:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
