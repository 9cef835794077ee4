"""Helpers shared by the tests: feeding parsers in pieces, loading fixtures, parsing SSE output."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from openai import ContentFilterFinishReasonError, LengthFinishReasonError
from openai._models import construct_type
from openai.lib.streaming.chat._completions import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

DATA = Path(__file__).parent / "data"
PROTOCOL = DATA / "protocol"  # a copy of shared/protocol/fixtures

T = TypeVar("T")
In = TypeVar("In", contravariant=True)


class Feeder(Protocol[In, T]):  # type: ignore[misc]
    def feed(self, data: In) -> list[T]: ...

    def finish(self) -> list[T]: ...


def random_cuts(rng: random.Random, length: int) -> list[int]:
    cuts: list[int] = []
    while sum(cuts) < length:
        cuts.append(min(rng.randint(1, 17), length - sum(cuts)))
    return cuts


def feed_in_pieces(make: Any, data: bytes, seeds: tuple[int, ...] = (0, 1, 2)) -> list[list[Any]]:
    """Feed `data` whole, one byte at a time, and in seeded random splits; return each output.

    The caller asserts that every output equals the golden one.
    """
    plans: list[list[int]] = [[len(data)], [1] * len(data)]
    plans += [random_cuts(random.Random(seed), len(data)) for seed in seeds]
    results = []
    for cuts in plans:
        feeder, out, pos = make(), [], 0
        for size in cuts:
            out += feeder.feed(data[pos : pos + size])
            pos += size
        results.append(out + feeder.finish())
    return results


def sse_payloads(raw: bytes) -> list[Any]:
    """The `data:` payloads of an SSE body our faces produced, JSON-parsed (`[DONE]` kept as str).

    Asserts the framing contract on the way: only `data:` and comment lines, each event one line.
    """
    out: list[Any] = []
    for block in raw.decode("utf-8").split("\n\n"):
        if not block:
            continue
        data_lines = []
        for line in block.split("\n"):
            if line.startswith(":"):
                continue
            assert line.startswith("data: "), f"unexpected SSE line {line!r}"
            data_lines.append(line[len("data: ") :])
        if not data_lines:
            continue
        assert len(data_lines) == 1, "one data line per event"
        payload = data_lines[0]
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def assert_stream_contract(payloads: list[Any], *, include_usage: bool) -> None:
    """The chat stream contract of DESIGN.md / CLIENT_EXPECTATIONS.md §5 for a clean stream."""
    assert payloads, "empty stream"
    assert payloads[-1] == "[DONE]", "a clean stream ends with data: [DONE]"
    chunks = payloads[:-1]
    assert "[DONE]" not in chunks
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1, "one id for every chunk"
    assert len({c["created"] for c in chunks}) == 1, "one created for every chunk"
    first = chunks[0]["choices"][0]["delta"]
    assert first.get("role") == "assistant", "the first chunk carries the role"
    roles = [c for c in chunks if c["choices"] and "role" in c["choices"][0]["delta"]]
    assert len(roles) == 1, "role appears exactly once"
    finishes = [
        i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    assert len(finishes) == 1, "exactly one chunk carries finish_reason"
    usage_chunks = [c for c in chunks if not c["choices"]]
    if include_usage:
        assert len(usage_chunks) == 1 and chunks[-1] is usage_chunks[0], "usage chunk is last"
        assert finishes[0] == len(chunks) - 2, "the usage chunk follows the finish chunk"
        assert usage_chunks[0]["usage"]["total_tokens"] >= 0
    else:
        assert not usage_chunks, "no usage chunk unless stream_options.include_usage"
        assert finishes[0] == len(chunks) - 1, "the finish chunk is the last chunk"
    assert all(c.get("usage") is None for c in chunks if c["choices"])
    for c in chunks:
        assert "error" not in c


def sdk_state(chunks: list[dict[str, Any]]) -> ChatCompletionStreamState[Any]:
    """Feed chunks to openai-python's ChatCompletionStreamState as `chat.completions.stream()`
    does (chunks are built with `construct_type`, like `Stream._process_response_data`)."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for item in chunks:
        assert "error" not in item
        parsed = cast("ChatCompletionChunk", construct_type(type_=ChatCompletionChunk, value=item))
        list(state.handle_chunk(parsed))
    return state


def sdk_final(chunks: list[dict[str, Any]]) -> Any:
    """The SDK's final completion; for `length` / `content_filter` the one it raises with
    (MAPPING.md H.11: `get_final_completion()` raises for those, carrying the completion)."""
    try:
        return sdk_state(chunks).get_final_completion()
    except (LengthFinishReasonError, ContentFilterFinishReasonError) as exc:
        completion = exc.completion
    assert completion is not None
    return completion
