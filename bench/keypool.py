"""Key pool load test (issue 21): 4 upstream keys, each limited by the fake upstream to N
requests per second; how much does trioproxy sustain, and when does a client first see a 429?

Stage: benchmark harness only (not part of trioproxy). One process, one trio run: a fake
Anthropic upstream (h11) that keeps a sliding one-second window per key and answers 429 with
`retry-after-ms` (the time until the window has room) past N; trioproxy serving it through
`[upstream:pool] api_key = k1, k2, k3, k4`; and an open-loop load generator posting
non-streaming chat requests at a fixed rate for a few seconds per step.

    .venv/bin/python bench/keypool.py                    # N = 25 req/s per key, 4 s per step
    .venv/bin/python bench/keypool.py --per-key 50 --seconds 6 --json

For each offered rate (a fraction of the pool's capacity 4N) it prints the answers per second
the client got, the client-visible 429s, the 429s the upstream gave (each one moved a request to
another key, or made it wait within the retry budget), and latency percentiles. Expected: close
to 4N answered with no client 429 up to the pool's capacity; past it, 429s with retry-after.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time
from functools import partial
from typing import Any

import h11
import trio

from trioproxy.config import parse_config
from trioproxy.server import serve
from trioproxy.service import Runtime
from trioproxy.upstream import HTTPClient, Timeouts

KEYS = tuple(f"sk-bench-key-{i}-0123456789" for i in range(4))
ANSWER = json.dumps(
    {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "claude-bench",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 1},
    }
).encode()
LIMITED = json.dumps(
    {"type": "error", "error": {"type": "rate_limit_error", "message": "rate limited"}}
).encode()


class LimitedUpstream:
    """Anthropic Messages fake: N requests per sliding second per key (`x-api-key`)."""

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self.windows: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self.answered: collections.Counter[str] = collections.Counter()
        self.limited: collections.Counter[str] = collections.Counter()

    def _admit(self, key: str) -> float | None:
        """None if the key has room now, else seconds until it has."""
        now = time.monotonic()
        window = self.windows[key]
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) < self.per_key:
            window.append(now)
            return None
        return window[0] + 1.0 - now

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                key = ""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                        continue
                    if isinstance(event, h11.Request):
                        key = dict(event.headers).get(b"x-api-key", b"").decode()
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                wait = self._admit(key)
                if wait is None:
                    self.answered[key] += 1
                    status, body, extra = 200, ANSWER, []
                else:
                    self.limited[key] += 1
                    extra = [("retry-after-ms", str(max(1, round(wait * 1000))))]
                    status, body = 429, LIMITED
                headers = [
                    ("content-type", "application/json"),
                    ("content-length", str(len(body))),
                    *extra,
                ]
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
                await stream.send_all(conn.send(h11.Data(data=body)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                conn.start_next_cycle()
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            return


def proxy_ini(upstream_url: str) -> str:
    return f"""
[proxy]
listen = 127.0.0.1:0
log_level = warning

[upstream:pool]
type = anthropic
base_url = {upstream_url}
api_key = {", ".join(KEYS)}

[model:bench]
upstream = pool
upstream_model = claude-bench
"""


async def load_step(http: HTTPClient, url: str, rate: float, seconds: float) -> dict[str, Any]:
    """Post `rate` requests per second for `seconds` (open loop); the client's view."""
    body = json.dumps(
        {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    ).encode()
    statuses: collections.Counter[int] = collections.Counter()
    latencies: list[float] = []
    retry_afters: list[float] = []

    async def one() -> None:
        began = trio.current_time()
        async with http.stream(
            "POST",
            url + "/v1/chat/completions",
            headers=[("content-type", "application/json")],
            body=body,
            timeouts=Timeouts(connect=5, first_byte=30, read=30, total=60),
        ) as resp:
            await resp.aread()
            statuses[resp.status] += 1
            if resp.status == 429:
                found = dict(resp.headers).get("retry-after")
                if found:
                    retry_afters.append(float(found))
        latencies.append(trio.current_time() - began)

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        count = round(rate * seconds)
        for index in range(count):
            await trio.sleep_until(started + index / rate)
            nursery.start_soon(one)
    # From the first request sent to the last answer: a request that waited for a key within
    # the retry budget stretches the step, so this is the rate the pool really sustained.
    elapsed = trio.current_time() - started
    ordered = sorted(latencies)
    return {
        "offered_per_s": rate,
        "answered": statuses[200],
        "sent": count,
        "answered_per_s": round(statuses[200] / elapsed, 1),
        "client_429": statuses[429],
        "other_errors": sum(v for k, v in statuses.items() if k not in (200, 429)),
        "p50_ms": round(statistics.median(ordered) * 1000, 1) if ordered else None,
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 1) if ordered else None,
        "max_retry_after_s": max(retry_afters) if retry_afters else None,
    }


async def run(per_key: int, seconds: float, fractions: list[float]) -> list[dict[str, Any]]:
    fake = LimitedUpstream(per_key)
    rows = []
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, fake.handle, listeners)
        config = parse_config(proxy_ini(f"http://127.0.0.1:{port}"), {})
        upstream_http, client_http = HTTPClient(), HTTPClient()
        try:
            runtime = Runtime(config, upstream_http)
            urls = await nursery.start(partial(serve, config, runtime=runtime))
            capacity = per_key * len(KEYS)
            done: collections.Counter[str] = collections.Counter()
            for fraction in fractions:
                await trio.sleep(1.1)  # let every key's window empty between steps
                before = sum(fake.limited.values())
                row = await load_step(client_http, urls[0], capacity * fraction, seconds)
                row["of_capacity"] = fraction
                row["upstream_429"] = sum(fake.limited.values()) - before
                row["per_key_answered"] = [fake.answered[key] - done[key] for key in KEYS]
                done = collections.Counter(fake.answered)
                rows.append(row)
        finally:
            await client_http.aclose()
            await upstream_http.aclose()
        nursery.cancel_scope.cancel()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-key", type=int, default=25, help="requests/s each key may make")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each step")
    parser.add_argument(
        "--fractions",
        default="0.5,0.9,1.0,1.25,1.5",
        help="offered load as fractions of the pool's capacity (4 x per-key)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    args = parser.parse_args()
    fractions = [float(f) for f in args.fractions.split(",")]
    rows = trio.run(run, args.per_key, args.seconds, fractions)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"4 keys x {args.per_key} req/s = capacity {4 * args.per_key} req/s; "
        f"{args.seconds:g} s per step"
    )
    print(
        f"{'load':>6} {'offered/s':>9} {'answered/s':>10} {'client 429':>10} {'upstream 429':>12} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'max retry-after':>15}  answered per key"
    )
    for row in rows:
        print(
            f"{row['of_capacity']:>5.0%} {row['offered_per_s']:>9.0f} {row['answered_per_s']:>10} "
            f"{row['client_429']:>10} {row['upstream_429']:>12} {row['p50_ms']!s:>7} "
            f"{row['p99_ms']!s:>7} {row['max_retry_after_s']!s:>15}  {row['per_key_answered']}"
        )


if __name__ == "__main__":
    main()
