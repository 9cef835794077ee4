"""Framing: chunks and errors to the bytes and objects each face sends.

Stage: the last pure step before the wire. `sse_event` frames one chunk as `data: <json>\\n\\n`;
`error_body` renders any `ProxyError` as the OpenAI envelope. Nothing else in trioproxy builds
error JSON.

Invariants (DESIGN.md "The chat stream", CLIENT_EXPECTATIONS.md §5): only `data:` lines and `:`
comment lines, never `event:`, `id:` or `retry:` (they break the official openai SDKs); one JSON
object per event on a single line (json.dumps escapes every newline, and U+2028/U+2029 are legal
inside a line because SDKs split lines on bytes `\\r` / `\\n` only); `data: [DONE]` exactly, with no
trailing space (openai-node >= 7 compares it exactly).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trioproxy.errors import ProxyError

__all__ = [
    "DONE",
    "KEEPALIVE",
    "SSE_HEADERS",
    "error_body",
    "error_json",
    "json_bytes",
    "sse_event",
]

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"

# `x-accel-buffering: no` tells nginx not to buffer the stream (nginx docs, proxy_buffering).
SSE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON, the one encoder used for every body and chunk."""
    return _encoder.encode(value).encode("utf-8")


def sse_event(chunk: Any) -> bytes:
    """One SSE event carrying one JSON object on one `data:` line."""
    return b"data: " + json_bytes(chunk) + b"\n\n"


def error_body(exc: ProxyError) -> dict[str, Any]:
    """The OpenAI error envelope; all four keys are always present (MAPPING.md F.1, P-F1)."""
    return {
        "error": {
            "message": exc.message,
            "type": exc.error_type,
            "param": exc.param,
            "code": exc.code,
        }
    }


def error_json(exc: ProxyError) -> bytes:
    return json_bytes(error_body(exc))
