"""The contract every upstream dialect implements, and the chunk builders they share.

Stage: translate (pure). A `Dialect` turns a validated OpenAI chat request into the bytes of one
upstream HTTP request (`build_request`), and turns what comes back into OpenAI shapes: a
`StreamTranslator` for event streams (`feed(SSEEvent) -> chunks`, `finish()`), `translate_response`
for a non-streaming body, `translate_error` for a non-2xx answer. No IO, no clock, no ids: those
arrive in `StreamMeta`.

Invariants every stream translator keeps (DESIGN.md "The chat stream", CLIENT_EXPECTATIONS.md §5):
- the first chunk it returns is the one role chunk (`delta: {"role": "assistant", "content": ""}`);
- exactly one chunk carries a `finish_reason`, emitted when the upstream's terminal event arrives,
  followed (only when `meta.include_usage`) by one usage chunk with `choices: []`;
- an upstream error event raises `UpstreamStatusError`; bad JSON or events out of order raise
  `UpstreamProtocolError`; `finish()` at EOF raises `UpstreamProtocolError` unless the terminal
  event was seen (a truncated stream is never a clean finish);
- `[DONE]` is not a chunk: the SSE framing adds it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from trioproxy.errors import UpstreamProtocolError

if TYPE_CHECKING:
    from trioproxy.sse import SSEEvent

__all__ = [
    "Chunk",
    "Dialect",
    "ModelDefaults",
    "StreamMeta",
    "StreamTranslator",
    "Target",
    "UpstreamRequest",
    "chunk",
    "load_event_json",
    "usage_chunk",
]

Chunk = dict[str, Any]  # one `chat.completion.chunk` object, ready for json.dumps
JSONObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ModelDefaults:
    """Per-model defaults from a `[model:NAME]` section; the client's own values win."""

    max_tokens: int | None = None
    reasoning_effort: str | None = None
    system_prompt: str | None = None  # prepended to the client's system messages
    # How `response_format: {"type": "json_object"}` reaches an Anthropic upstream ("tool",
    # "instruction" or "off"); docs/translation-anthropic.md "JSON mode". Other dialects ignore it.
    json_mode: str = "tool"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a translated request goes: the upstream's model name and the model's defaults."""

    upstream_model: str
    defaults: ModelDefaults = field(default_factory=ModelDefaults)


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """One upstream HTTP request, minus origin and credentials (the edge adds those)."""

    path: str  # appended to the upstream base_url's path, e.g. "/messages" or "/v1/messages"
    body: bytes  # JSON
    headers: tuple[tuple[str, str], ...] = ()  # dialect headers, e.g. anthropic-version
    stream: bool = True


@dataclass(frozen=True, slots=True)
class StreamMeta:
    """What a translator may not make up itself: ids, the clock, and what the client asked for."""

    completion_id: str  # "chatcmpl-..."
    created: int  # epoch seconds
    model: str  # reported model until the upstream names its own
    include_usage: bool = False
    # The client asked for `response_format: {"type": "json_object"}`: a translator that cannot
    # have the upstream guarantee it checks the answer is a JSON object (anthropic_stream.py).
    json_object: bool = False


class StreamTranslator(Protocol):
    """Upstream events in, OpenAI chunks out. See the module docstring for the invariants."""

    def feed(self, event: SSEEvent) -> list[Chunk]: ...

    def finish(self) -> list[Chunk]: ...

    @property
    def done(self) -> bool:
        """True once the terminal event was translated; the edge may stop reading then."""
        ...

    @property
    def usage(self) -> JSONObject | None:
        """The OpenAI `usage` object known so far (for logs and metrics), or None."""
        ...


class Dialect(Protocol):
    """One upstream API family (anthropic, openai-responses, openai-chat)."""

    name: str

    def auth_headers(self, api_key: str) -> tuple[tuple[str, str], ...]: ...

    def build_request(self, body: JSONObject, target: Target) -> UpstreamRequest:
        """Translate a validated OpenAI chat request body. Raises `ClientError` subclasses."""
        ...

    def stream_translator(self, meta: StreamMeta) -> StreamTranslator: ...

    def translate_response(self, body: bytes, meta: StreamMeta) -> JSONObject:
        """A non-streaming upstream body to a `chat.completion` object."""
        ...

    def translate_error(
        self, status: int, headers: tuple[tuple[str, str], ...], body: bytes
    ) -> Exception:
        """A non-2xx upstream answer to the `UpstreamStatusError` the client should see."""
        ...


def chunk(
    meta: StreamMeta,
    delta: JSONObject,
    *,
    finish_reason: str | None = None,
    model: str | None = None,
) -> Chunk:
    """A `chat.completion.chunk` with one choice. `usage: null` on every chunk but the usage one."""
    return {
        "id": meta.completion_id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": model or meta.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        "usage": None,
    }


def usage_chunk(meta: StreamMeta, usage: JSONObject, *, model: str | None = None) -> Chunk:
    """The one usage chunk sent after the finish chunk when `stream_options.include_usage`."""
    return {
        "id": meta.completion_id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": model or meta.model,
        "choices": [],
        "usage": usage,
    }


def load_event_json(event: SSEEvent) -> JSONObject:
    """Parse event data as a JSON object; raises `UpstreamProtocolError`, not JSONDecodeError."""
    try:
        payload = json.loads(event.data)
    except ValueError as exc:
        raise UpstreamProtocolError(f"upstream sent an event that is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise UpstreamProtocolError("upstream sent an event whose data is not a JSON object")
    return payload
