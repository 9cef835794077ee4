"""Neutral `chat.completion.chunk` stream -> Anthropic Messages stream events
(docs/translation-anthropic-inbound.md, "Streaming").

Stage: translate (pure), outbound to a client that speaks Anthropic. The engine yields the
neutral chunks of one answer; `AnthropicStreamTranslator.feed(chunk)` returns the Anthropic events
they complete, `finish()` the last ones; `encode_event` frames an event as Anthropic's SSE
(`event: NAME` + `data: JSON`, which the Anthropic SDKs dispatch on, CLIENT_EXPECTATIONS.md §3.1);
`error_event` is the mid-stream failure event.

Invariants (what the Anthropic SDKs' accumulators need, CLIENT_EXPECTATIONS.md §3.5, §4):
- `message_start` is the first event, whatever the first chunk holds;
- content blocks are sequential: each has `content_block_start`, deltas, `content_block_stop`,
  and the next one starts only after the previous one stopped; `index` counts every block from 0;
- one `tool_use` block per tool call (OpenAI tool index), its arguments streamed byte for byte
  as `input_json_delta.partial_json`;
- exactly one `message_delta` (stop_reason, usage) and then `message_stop`, at the end;
- `finish()` raises `UpstreamProtocolError` if no chunk carried a `finish_reason`: a truncated
  stream is never a clean end.

Theory of operation: phases AWAIT_START -> STREAMING -> FINISHING -> STOPPED. The chunk with a
`finish_reason` closes the open block and moves to FINISHING; the end (`message_delta`,
`message_stop`) waits there for the usage chunk (`choices: []`, requested by
`stream_options.include_usage`, which the request translator always sets), or for `finish()` when
no usage chunk comes.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from trioproxy.errors import ProxyError, UpstreamProtocolError, UpstreamStatusError
from trioproxy.translate.from_anthropic_response import (
    anthropic_error_type,
    anthropic_usage,
    stop_reason_from_finish,
)

__all__ = [
    "AnthropicEvent",
    "AnthropicStreamTranslator",
    "encode_event",
    "error_event",
    "ping_event",
]

AnthropicEvent = dict[str, Any]  # one stream event; its "type" is also its SSE event name
JSONObject = dict[str, Any]


class _Phase(enum.Enum):
    AWAIT_START = enum.auto()
    STREAMING = enum.auto()
    FINISHING = enum.auto()  # finish_reason seen, waiting for the usage chunk
    STOPPED = enum.auto()


class _Kind(enum.Enum):
    TEXT = "text"
    THINKING = "thinking"
    TOOL = "tool_use"


def encode_event(event: AnthropicEvent) -> bytes:
    """One event in Anthropic's SSE framing: `event: <type>\\ndata: <json>\\n\\n`.

    The JSON is compact and on one line (json.dumps escapes every line break inside strings).

    >>> encode_event({"type": "message_stop"})
    b'event: message_stop\\ndata: {"type":"message_stop"}\\n\\n'
    """
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


def error_event(error: Exception) -> AnthropicEvent:
    """The `error` event that ends a stream after it started (Anthropic streaming docs, "Error
    events": https://docs.anthropic.com/en/docs/build-with-claude/streaming#error-events).

    >>> from trioproxy.errors import UpstreamTimeout
    >>> error_event(UpstreamTimeout("no data within the read timeout"))["error"]["type"]
    'timeout_error'
    """
    if isinstance(error, ProxyError):
        kind, message = anthropic_error_type(error), error.message
    else:  # a bug: say nothing about it beyond its kind
        kind, message = "api_error", "internal error"
    return {"type": "error", "error": {"type": kind, "message": message}}


def ping_event() -> AnthropicEvent:
    """A keep-alive event; the Anthropic SDKs skip it (CLIENT_EXPECTATIONS.md §3.2)."""
    return {"type": "ping"}


class AnthropicStreamTranslator:
    """Neutral chat chunks in, Anthropic stream events out. Performs no IO.

    Args:
        message_id: the `msg_...` id for `message_start` (made by the caller).
        model: the model name to report.
        input_tokens: the prompt's tokens if known before the answer (else 0 in `message_start`,
            corrected by `message_delta.usage.input_tokens`).
        stop_sequences: the client's stop sequences (for `stop_reason: "stop_sequence"`).

    Example:
        >>> t = AnthropicStreamTranslator("msg_1", "m")
        >>> [e["type"] for e in t.feed({"choices": [{"index": 0, "delta": {"content": "Hi"}}]})]
        ['message_start', 'content_block_start', 'content_block_delta']
        >>> [e["type"] for e in t.feed({"choices": [{"index": 0, "delta": {},
        ...                                           "finish_reason": "stop"}]})]
        ['content_block_stop']
        >>> [e["type"] for e in t.finish()]
        ['message_delta', 'message_stop']
    """

    def __init__(
        self,
        message_id: str,
        model: str,
        *,
        input_tokens: int | None = None,
        stop_sequences: tuple[str, ...] = (),
    ) -> None:
        self._message_id = message_id
        self._model = model
        self._input_tokens = input_tokens
        self._stop_sequences = stop_sequences
        self._phase = _Phase.AWAIT_START
        self._open: tuple[_Kind, int] | None = None  # the block being streamed, and its index
        self._open_tool: int | None = None  # OpenAI tool index of the open tool_use block
        self._next_index = 0
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool index -> Anthropic block index
        self._usage: JSONObject | None = None  # the OpenAI usage object, latest wins
        self._finish_reason: object = None
        self._matched_stop: object = None

    @property
    def done(self) -> bool:
        """True once `message_stop` was returned; nothing more will be emitted."""
        return self._phase is _Phase.STOPPED

    @property
    def usage(self) -> JSONObject | None:
        """The OpenAI usage object seen so far (for logs and metrics), or None."""
        return self._usage

    def feed(self, chunk: object) -> list[AnthropicEvent]:
        """Translate one `chat.completion.chunk` dict.

        Raises:
            UpstreamProtocolError: a chunk that is not a chunk, content after the finish, a
                tool call without id or name, or arguments for a tool call that already ended.
            UpstreamStatusError: a chunk carrying `{"error": {...}}`.
        """
        if not isinstance(chunk, dict):
            raise UpstreamProtocolError("upstream chunk is not a JSON object")
        if chunk.get("error"):
            raise _error_from_chunk(chunk["error"])
        choices = chunk.get("choices")
        if choices is None:
            choices = []
        if not isinstance(choices, list):
            raise UpstreamProtocolError("upstream chunk's choices is not an array")
        if self._phase is _Phase.STOPPED:
            if any(_has_content(choice) for choice in choices):
                raise UpstreamProtocolError("upstream sent content after the end of the answer")
            return []

        out: list[AnthropicEvent] = []
        if self._phase is _Phase.AWAIT_START:
            out.append(self._message_start())
            self._phase = _Phase.STREAMING
        for choice in choices:
            out += self._on_choice(choice)
        usage = chunk.get("usage")
        if usage is not None:
            if not isinstance(usage, dict):
                raise UpstreamProtocolError("upstream usage is not a JSON object")
            self._usage = usage
            if self._phase is _Phase.FINISHING:
                out += self._end()
        return out

    def finish(self) -> list[AnthropicEvent]:
        """The events still owed at the end of the chunks.

        Raises:
            UpstreamProtocolError: no chunk carried a `finish_reason` (a truncated answer).
        """
        if self._phase is _Phase.STOPPED:
            return []
        if self._phase is not _Phase.FINISHING:
            raise UpstreamProtocolError("upstream stream ended before its finish_reason")
        return self._end()

    # --- internals ---

    def _message_start(self) -> AnthropicEvent:
        return {
            "type": "message_start",
            "message": {
                "id": self._message_id,
                "type": "message",
                "role": "assistant",
                "model": self._model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": self._input_tokens or 0, "output_tokens": 0},
            },
        }

    def _on_choice(self, choice: object) -> list[AnthropicEvent]:
        if not isinstance(choice, dict):
            raise UpstreamProtocolError("upstream choice is not a JSON object")
        if choice.get("index", 0) != 0:
            raise UpstreamProtocolError("upstream sent a choice other than index 0")
        delta = choice.get("delta")
        if delta is None:
            delta = {}
        if not isinstance(delta, dict):
            raise UpstreamProtocolError("upstream delta is not a JSON object")
        out: list[AnthropicEvent] = []
        if _has_content(choice):
            if self._phase is _Phase.FINISHING:
                raise UpstreamProtocolError("upstream sent content after its finish_reason")
            reasoning = delta.get("reasoning_content")
            if reasoning is None:
                reasoning = delta.get("reasoning")  # OpenRouter's name (MAPPING.md B.3 [S15])
            if isinstance(reasoning, str) and reasoning:
                out += self._into(_Kind.THINKING)
                out.append(self._delta({"type": "thinking_delta", "thinking": reasoning}))
            for key in ("content", "refusal"):  # a refusal's text is shown as text
                text = delta.get(key)
                if isinstance(text, str) and text:
                    out += self._into(_Kind.TEXT)
                    out.append(self._delta({"type": "text_delta", "text": text}))
            calls = delta.get("tool_calls")
            if calls is not None:
                if not isinstance(calls, list):
                    raise UpstreamProtocolError("upstream tool_calls is not an array")
                for call in calls:
                    out += self._on_tool_call(call)
        finish_reason = choice.get("finish_reason")
        if finish_reason is not None:
            if self._phase is _Phase.FINISHING:
                raise UpstreamProtocolError("upstream sent a second finish_reason")
            out += self._close()
            self._finish_reason = finish_reason
            self._matched_stop = choice.get("stop_reason")
            self._phase = _Phase.FINISHING
        return out

    def _on_tool_call(self, call: object) -> list[AnthropicEvent]:
        if not isinstance(call, dict):
            raise UpstreamProtocolError("upstream tool call delta is not a JSON object")
        index = call.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise UpstreamProtocolError("upstream tool call delta has no integer index")
        function = call.get("function")
        if function is None:
            function = {}
        if not isinstance(function, dict):
            raise UpstreamProtocolError("upstream tool call function is not a JSON object")
        out: list[AnthropicEvent] = []
        if index not in self._tool_blocks:
            call_id, name = call.get("id"), function.get("name")
            if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
                raise UpstreamProtocolError(
                    f"upstream tool call {index} started without an id and a function name"
                )
            out += self._close()
            out.append(
                self._start(
                    _Kind.TOOL, {"type": "tool_use", "id": call_id, "name": name, "input": {}}
                )
            )
            self._tool_blocks[index] = self._next_index - 1
            self._open_tool = index
        elif self._open_tool != index:
            # Anthropic blocks do not interleave; a fragment for a call that already ended
            # cannot be placed (inbound doc, "Streaming").
            raise UpstreamProtocolError(
                f"upstream sent arguments for tool call {index} after another block started"
            )
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, str):
            raise UpstreamProtocolError("upstream tool call arguments are not a string")
        if arguments:
            out.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        return out

    def _into(self, kind: _Kind) -> list[AnthropicEvent]:
        """Make sure the open block is a `kind` block (text or thinking)."""
        if self._open is not None and self._open[0] is kind:
            return []
        out = self._close()
        initial: JSONObject = (
            {"type": "text", "text": ""}
            if kind is _Kind.TEXT
            else {"type": "thinking", "thinking": "", "signature": ""}
        )
        out.append(self._start(kind, initial))
        return out

    def _start(self, kind: _Kind, block: JSONObject) -> AnthropicEvent:
        index = self._next_index
        self._next_index += 1
        self._open = (kind, index)
        return {"type": "content_block_start", "index": index, "content_block": block}

    def _delta(self, delta: JSONObject) -> AnthropicEvent:
        assert self._open is not None
        return {"type": "content_block_delta", "index": self._open[1], "delta": delta}

    def _close(self) -> list[AnthropicEvent]:
        if self._open is None:
            return []
        # A thinking block from a non-Anthropic upstream ends without a signature_delta: only
        # Anthropic can sign thinking (inbound doc, "Streaming").
        index = self._open[1]
        self._open = None
        self._open_tool = None
        return [{"type": "content_block_stop", "index": index}]

    def _end(self) -> list[AnthropicEvent]:
        out = self._close()
        stop_reason, stop_sequence = stop_reason_from_finish(
            self._finish_reason,
            matched_stop=self._matched_stop,
            stop_sequences=self._stop_sequences,
            had_tool_use=bool(self._tool_blocks),
        )
        usage = anthropic_usage(self._usage)
        if self._usage is None:
            usage = {"output_tokens": 0}  # nothing known: message_start's values stand
        out.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": usage,
            }
        )
        out.append({"type": "message_stop"})
        self._phase = _Phase.STOPPED
        return out


def _has_content(choice: object) -> bool:
    if not isinstance(choice, dict):
        return True  # let _on_choice say what is wrong with it
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return delta is not None
    return any(
        delta.get(key) not in (None, "", [])
        for key in ("content", "reasoning_content", "reasoning", "refusal", "tool_calls")
    )


def _error_from_chunk(error: object) -> UpstreamStatusError:
    # A `{"error": {...}}` chunk (MAPPING.md F.2): the upstream failed after it began answering.
    if not isinstance(error, dict):
        return UpstreamStatusError("upstream failed mid-stream", upstream_status=200, status=502)
    message = error.get("message")
    kind = error.get("type")
    return UpstreamStatusError(
        message if isinstance(message, str) and message else "upstream failed mid-stream",
        upstream_status=200,
        status=502,
        error_type=kind if isinstance(kind, str) else None,
    )
