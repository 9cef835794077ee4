"""Benchmark: SSEDecoder throughput on an Anthropic-shaped event stream.

Run from the repository root: `python bench/sse_decode.py [--deltas N] [--repeat N]`.
Prints a markdown table, then the same figures as JSON (one object per piece size).

The stream is what `POST /v1/messages` with `stream: true` sends (message_start,
content_block_start, many content_block_delta text deltas with the odd ping, content_block_stop,
message_delta, message_stop), with a mix of ASCII, accented and CJK text, fed to the decoder in
fixed-size pieces as the upstream client would hand them over.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trioproxy.sse import SSEDecoder

PIECE_SIZES = (1024, 16 * 1024)  # bytes: a small TLS record, and a full 16 KiB one
_WORDS = ["The", " quick", " brown", " fox", " — ", "jumps", " über", " 日本語", " the", " lazy"]


def _event(name: str, payload: dict[str, object]) -> bytes:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"event: {name}\ndata: {data}\n\n".encode()


def anthropic_stream(deltas: int) -> tuple[bytes, int]:
    """An Anthropic Messages event stream with `deltas` text deltas; returns (body, events)."""
    events = [
        _event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_bench",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-sonnet-4-5-20250929",
                    "content": [],
                    "stop_reason": None,
                    "usage": {"input_tokens": 1200, "output_tokens": 1},
                },
            },
        ),
        _event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]
    for i in range(deltas):
        text = "".join(_WORDS[(i + j) % len(_WORDS)] for j in range(1 + i % 5))
        delta = {"type": "text_delta", "text": text}
        events.append(
            _event(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            )
        )
        if i % 200 == 199:
            events.append(_event("ping", {"type": "ping"}))
    events += [
        _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": deltas},
            },
        ),
        _event("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(events), len(events)


@dataclass(frozen=True, slots=True)
class Result:
    piece_bytes: int
    events: int
    bytes: int
    best_seconds: float
    events_per_second: int
    mb_per_second: float  # 10**6 bytes


def run(body: bytes, expected: int, piece: int, repeat: int) -> Result:
    """Decode `body` in `piece`-byte pieces `repeat` times; report the best run."""
    pieces = [body[i : i + piece] for i in range(0, len(body), piece)]
    best = float("inf")
    for _ in range(repeat):
        decoder = SSEDecoder()
        count = 0
        start = time.perf_counter()
        for chunk in pieces:
            count += len(decoder.feed(chunk))
        count += len(decoder.finish())
        best = min(best, time.perf_counter() - start)
        assert count == expected, (count, expected)
    return Result(
        piece_bytes=piece,
        events=expected,
        bytes=len(body),
        best_seconds=round(best, 6),
        events_per_second=round(expected / best),
        mb_per_second=round(len(body) / best / 1e6, 1),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deltas", type=int, default=4000, help="text deltas in the stream")
    parser.add_argument("--repeat", type=int, default=20, help="runs per piece size (best kept)")
    args = parser.parse_args(argv)
    body, events = anthropic_stream(args.deltas)
    results = [run(body, events, piece, args.repeat) for piece in PIECE_SIZES]
    print(
        f"SSEDecoder, {events} events, {len(body) / 1e6:.2f} MB, Python {platform.python_version()}"
    )
    print()
    print("| piece | events/s | MB/s | best run |")
    print("|------:|---------:|-----:|---------:|")
    for r in results:
        print(
            f"| {r.piece_bytes // 1024} KiB | {r.events_per_second:,} | {r.mb_per_second} "
            f"| {r.best_seconds * 1000:.2f} ms |"
        )
    print()
    print(
        json.dumps(
            {"python": platform.python_version(), "results": [asdict(r) for r in results]}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
