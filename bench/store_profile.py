"""Where one shared-store admission goes: admissions per second in-process, beside the floors.

Stage: benchmark harness only. Run from the repository root: `python bench/store_profile.py
[--calls N] [--profile]`. Needs `redis-server` on the PATH and coredis (the `redis` extra).

One redis-server (no persistence), one `RedisStore` in this process, one request at a time:
`store.admit(key)` then `store.release(key, lease)` (the release is batched off the request path,
as in the daemon), N times. Printed beside it, in the same run, the floors it is made of:
- a raw round trip: the EVALSHA of the admit script written and read by hand on a trio socket
  (RESP2, no parsing beyond the reply's length): what the network and Redis cost;
- the same EVALSHA through coredis: what the client library adds to it.
`--profile` runs the admit loop again under cProfile and prints the top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.redis_server import REDIS_SERVER, RedisServer  # noqa: E402
from trioproxy.config_types import ClientKey  # noqa: E402
from trioproxy.metrics import Metrics  # noqa: E402
from trioproxy.store import redis as store_redis  # noqa: E402

KEY = ClientKey("bench", "sk", rpm=100_000_000, max_concurrent=1000)
# The admit script's KEYS and ARGV for the two floors (see _ADMIT): no limits, nothing carried.
_KEYS = {name: [f"p:{{{name}}}:r", f"p:{{{name}}}:c", f"p:{{{name}}}:t"] for name in ("raw", "lib")}
_ARGS: list[str | int] = [0, -1, "", 30000, 0, 0]


def _per_call(label: str, calls: int, seconds: float) -> None:
    print(f"{label:<40} {calls / seconds:8.0f} calls/s  {seconds / calls * 1e6:7.1f} us/call")


async def _raw(url_port: int, calls: int) -> float:
    """EVALSHA by hand: the wire and the server, nothing else."""
    sha = hashlib.sha1(store_redis._ADMIT.encode()).hexdigest()
    stream = await trio.open_tcp_stream("127.0.0.1", url_port)
    keys = [k.encode() for k in _KEYS["raw"]]
    parts = [b"EVALSHA", sha.encode(), b"%d" % len(keys), *keys, *(str(a).encode() for a in _ARGS)]
    wire = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    start = time.perf_counter()
    for _ in range(calls):
        await stream.send_all(wire)
        data = b""
        while data.count(b"\r\n") < 2:  # the reply, `*1\r\n:0\r\n` (admitted)
            data += await stream.receive_some(65536)
            assert not data.startswith(b"-"), data  # an error: _ARGS is out of date
    took = time.perf_counter() - start
    await stream.aclose()
    return took


async def _admit_loop(store: store_redis.RedisStore, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        lease = await store.admit(KEY)
        store.release(KEY, lease)
    return time.perf_counter() - start


async def _main(args: argparse.Namespace, server: RedisServer) -> None:
    store = store_redis.RedisStore(server.url, prefix="bench:", timeout=1.0, metrics=Metrics())
    assert await store.open(), store.degraded_reason
    await _admit_loop(store, 200)  # warm up
    client = store._scripts()
    sha = client.admit.sha

    async def coredis_evalsha(calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            await client.redis.evalsha(sha, _KEYS["lib"], _ARGS)
        return time.perf_counter() - start

    # Interleaved, so a slow spell of a shared machine lands on every row.
    totals = {"raw": 0.0, "coredis": 0.0, "admit": 0.0}
    rounds = 5
    per_round = max(1, args.calls // rounds)
    for _ in range(rounds):
        totals["raw"] += await _raw(server.port, per_round)
        totals["coredis"] += await coredis_evalsha(per_round)
        totals["admit"] += await _admit_loop(store, per_round)
    count = per_round * rounds
    _per_call("raw EVALSHA (trio socket)", count, totals["raw"])
    _per_call("coredis redis.evalsha()", count, totals["coredis"])
    _per_call("RedisStore.admit() + release()", count, totals["admit"])
    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        await _admit_loop(store, args.calls)
        profile.disable()
        stats = pstats.Stats(profile)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)
    await store.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if REDIS_SERVER is None:
        print("bench/store_profile.py needs redis-server", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            trio.run(_main, args, server)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
