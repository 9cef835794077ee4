"""Anthropic Messages stream events -> OpenAI `chat.completion.chunk` dicts (MAPPING.md C).

Stage: translate (pure), between the SSE decoder and the framing. `AnthropicStreamTranslator`
takes `SSEEvent`s from `SSEDecoder`, returns chunks, and performs no IO.

Invariants (base.py, DESIGN.md "The chat stream", CLIENT_EXPECTATIONS.md §5):
- the role chunk `{"role": "assistant", "content": ""}` is the first chunk, sent at
  `message_start` (C.2; DESIGN.md commits the response headers at the first upstream event);
  no later chunk carries `role`;
- tool calls are numbered from 0 in the order their blocks start (not by Anthropic's block
  index, H.8); `id`, `type`, `function.name` and `arguments: ""` appear only in a call's first
  delta; argument fragments pass through byte for byte, never re-serialised (C.2);
- exactly one chunk has a finish_reason, sent at `message_stop`, followed by the usage chunk only
  when `meta.include_usage` (C.4);
- an `error` event raises `UpstreamStatusError` (upstream_status 200, status from the error type);
  JSON that is not an object, a known event missing its fields, or events out of order raise
  `UpstreamProtocolError`; `finish()` raises `UpstreamProtocolError` unless `message_stop` came.
  Nothing else escapes `feed()` or `finish()`.

Theory of operation: the phase goes AWAIT_START -> STREAMING (at `message_start`) -> STOPPED (at
`message_stop`). Each content block gets a `_Block` when it starts, keyed by its Anthropic index
and remembering its kind (text, thinking, redacted thinking, tool, or skip for server-side blocks
and block types added later), so each delta can be routed or dropped. Usage counters from
`message_start` are overwritten by the cumulative ones in `message_delta` (H.12). Events after
`message_stop` are ignored; so are `ping` and unknown event types ([S11]: "integration must
ignore any unexpected event types").

Thinking signatures (MAPPING.md B.3, A.3): a client can only continue a thinking conversation with
tool use if it sends each thinking block back with its signature. The blocks are collected as
they stream and sent once, in one chunk right before the finish chunk, as
`delta: {"thinking_blocks": [{"type": "thinking", "thinking", "signature"} |
{"type": "redacted_thinking", "data"}, ...]}` (LiteLLM's key). Once, because SDK accumulators
merge repeated keys: openai-python's `accumulate_delta` sets a list it has not seen but merges a
second list by each entry's `index` key (one list per thinking block, without `index`, raises
`RuntimeError` at the second block - checked with openai 3.57.0), and openai-node's
`Object.assign` keeps only the last value. A single complete list survives both unchanged.

JSON mode (anthropic_request.py "JSON mode"; docs/translation-anthropic.md). The call of the
reserved `JSON_TOOL` is the answer: its `input_json_delta` fragments stream out as `content`,
byte for byte, and the finish reason is `stop`. Whenever JSON was asked for (`meta.json_object`,
or that call seen), the answer is checked: content is held back until its first non-blank
character shows it opens an object (`{`), so prose is never streamed; held text is released if
the turn turns out to call the client's tools (a preamble); at `message_stop` the whole content
must parse as a JSON object (`check_json_object`), else `UpstreamProtocolError` is raised instead
of the finish chunk, and the client sees an error where it would have seen the end.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trioproxy.errors import UpstreamProtocolError
from trioproxy.translate.anthropic_request import JSON_TOOL
from trioproxy.translate.anthropic_response import (
    check_json_object,
    error_from_event,
    finish_reason,
    openai_usage,
)
from trioproxy.translate.base import chunk, load_event_json, usage_chunk

if TYPE_CHECKING:
    from trioproxy.sse import SSEEvent
    from trioproxy.translate.base import Chunk, JSONObject, StreamMeta

__all__ = ["AnthropicStreamTranslator"]

_USAGE_COUNTERS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


class _Phase(enum.Enum):
    AWAIT_START = enum.auto()
    STREAMING = enum.auto()
    STOPPED = enum.auto()


class _Kind(enum.Enum):
    TEXT = enum.auto()
    THINKING = enum.auto()
    REDACTED = enum.auto()
    TOOL = enum.auto()
    JSON = enum.auto()  # JSON mode's tool call: its input is the answer's content
    SKIP = enum.auto()  # server tool blocks and their results (P-B3), unknown block types


# The delta type each block kind accepts; another known delta type on a block is out of order.
_DELTA_KIND = {
    "text_delta": _Kind.TEXT,
    "thinking_delta": _Kind.THINKING,
    "signature_delta": _Kind.THINKING,
    "input_json_delta": _Kind.TOOL,
}


@dataclass(slots=True)
class _Block:
    kind: _Kind
    tool_index: int = -1  # the OpenAI tool_calls index of a TOOL block
    initial_input: JSONObject = field(default_factory=dict)  # a TOOL block's start `input`
    has_arguments: bool = False  # a TOOL block got a non-empty input_json_delta
    thinking: JSONObject | None = None  # the thinking_blocks entry of a THINKING block
    stopped: bool = False


class AnthropicStreamTranslator:
    """Turns Anthropic `messages` stream events into OpenAI chunks. Performs no IO.

    Args:
        meta: the completion id, creation time, fallback model and `include_usage`.

    Example:
        >>> from trioproxy.sse import SSEEvent
        >>> from trioproxy.translate.base import StreamMeta
        >>> t = AnthropicStreamTranslator(StreamMeta("chatcmpl-1", 0, "m"))
        >>> [c["choices"][0]["delta"] for c in t.feed(SSEEvent('{"type": "message_start", '
        ...     '"message": {"model": "claude", "usage": {"input_tokens": 3}}}'))]
        [{'role': 'assistant', 'content': ''}]
        >>> t.feed(SSEEvent('{"type": "content_block_start", "index": 0, '
        ...     '"content_block": {"type": "text", "text": ""}}'))
        []
        >>> [c["choices"][0]["delta"] for c in t.feed(SSEEvent('{"type": "content_block_delta", '
        ...     '"index": 0, "delta": {"type": "text_delta", "text": "Hi"}}'))]
        [{'content': 'Hi'}]
    """

    def __init__(self, meta: StreamMeta) -> None:
        self._meta = meta
        self._phase = _Phase.AWAIT_START
        self._model = meta.model  # replaced by message_start's model
        self._raw_usage: JSONObject = {}  # Anthropic counters; overwritten, never added (H.12)
        self._stop_reason: Any = None
        self._blocks: dict[int, _Block] = {}  # Anthropic content-block index -> block state
        self._next_tool_index = 0
        self._thinking_seen = 0  # thinking blocks started, for the "\n\n" separator (P-B2)
        self._thinking_blocks: list[JSONObject] = []  # for the thinking_blocks chunk
        # JSON mode (module docstring): the content so far, what is held back, and whether
        # the content has shown it opens an object.
        self._json_answer = False  # the JSON_TOOL call was seen
        self._json_text: list[str] = []
        self._held: list[str] = []
        self._opens_object = False

    @property
    def done(self) -> bool:
        """True once `message_stop` was translated."""
        return self._phase is _Phase.STOPPED

    @property
    def usage(self) -> JSONObject | None:
        """The OpenAI usage known so far (B.2), or None before `message_start`."""
        if self._phase is _Phase.AWAIT_START:
            return None
        return openai_usage(self._raw_usage)

    def feed(self, event: SSEEvent) -> list[Chunk]:
        """Translate one upstream event; see the module docstring for what can be raised."""
        if self._phase is _Phase.STOPPED:
            return []  # after the terminal event everything is ignored
        if event.event == "ping":
            return []  # C.2: pings produce nothing, whatever their data (H.16)
        payload = load_event_json(event)  # UpstreamProtocolError, never JSONDecodeError
        kind = payload.get("type")
        if not isinstance(kind, str):
            kind = event.event  # the Anthropic SDK 0.x fills a missing type from the name
        if kind == "error":
            raise error_from_event(payload)  # C.2 / H.6: an error after HTTP 200
        if kind == "message_start":
            return self._on_message_start(payload)
        if kind not in (
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ):
            return []  # "ping" and event types added later are dropped on purpose [S11]
        if self._phase is _Phase.AWAIT_START:
            raise UpstreamProtocolError(f"upstream sent {kind} before message_start")
        match kind:
            case "content_block_start":
                return self._on_block_start(payload)
            case "content_block_delta":
                return self._on_block_delta(payload)
            case "content_block_stop":
                return self._on_block_stop(payload)
            case "message_delta":
                self._on_message_delta(payload)
                return []
            case _:  # message_stop
                self._phase = _Phase.STOPPED
                return self._final_chunks()

    def finish(self) -> list[Chunk]:
        """Signal the end of the upstream body.

        Raises:
            UpstreamProtocolError: `message_stop` never came. A stream cut after
                `message_delta` is an error too (unlike P-C2, which would finish normally):
                DESIGN.md says a truncated stream is never a clean finish.
        """
        if self._phase is not _Phase.STOPPED:
            raise UpstreamProtocolError("upstream stream ended before message_stop")
        return []

    # -- events ------------------------------------------------------------------------------

    def _on_message_start(self, payload: JSONObject) -> list[Chunk]:
        if self._phase is not _Phase.AWAIT_START:
            raise UpstreamProtocolError("upstream sent a second message_start")
        message = payload.get("message")
        if not isinstance(message, dict):
            raise UpstreamProtocolError("upstream message_start has no message object")
        model = message.get("model")
        if isinstance(model, str) and model:
            self._model = model
        self._merge_usage(message.get("usage"))
        self._phase = _Phase.STREAMING
        return [self._chunk({"role": "assistant", "content": ""})]

    def _on_block_start(self, payload: JSONObject) -> list[Chunk]:
        index = _index(payload)
        block = payload.get("content_block")
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(block, dict) or not isinstance(kind, str):
            raise UpstreamProtocolError("upstream content_block_start has no content_block")
        if index in self._blocks:
            raise UpstreamProtocolError(f"upstream started content block {index} twice")
        out: list[Chunk] = []
        match kind:
            case "text":
                self._blocks[index] = _Block(_Kind.TEXT)
                text = block.get("text")
                if isinstance(text, str) and text:  # C.2: a non-empty initial text is content
                    out += self._content(text)
            case "thinking":
                if self._thinking_seen:  # P-B2: thinking blocks are joined with a blank line
                    out.append(self._chunk({"reasoning_content": "\n\n"}))
                self._thinking_seen += 1
                text = block.get("thinking")
                text = text if isinstance(text, str) else ""
                signature = block.get("signature")
                entry = {
                    "type": "thinking",
                    "thinking": text,
                    "signature": signature if isinstance(signature, str) else "",
                }
                self._thinking_blocks.append(entry)
                self._blocks[index] = _Block(_Kind.THINKING, thinking=entry)
                if text:
                    out.append(self._chunk({"reasoning_content": text}))
            case "redacted_thinking":
                # Not reasoning text (B); kept only for replay in thinking_blocks.
                data = block.get("data")
                if isinstance(data, str) and data:
                    self._thinking_blocks.append({"type": "redacted_thinking", "data": data})
                self._blocks[index] = _Block(_Kind.REDACTED)
            case "tool_use":
                tool_id, name = block.get("id"), block.get("name")
                if not isinstance(tool_id, str) or not isinstance(name, str):
                    raise UpstreamProtocolError("upstream tool_use block has no id or name")
                initial = block.get("input")
                if name == JSON_TOOL:
                    self._json_answer = True
                    self._blocks[index] = _Block(
                        _Kind.JSON, initial_input=initial if isinstance(initial, dict) else {}
                    )
                    return out
                out += self._release()  # text before a client tool call is a preamble
                tool_index = self._next_tool_index
                self._next_tool_index += 1
                self._blocks[index] = _Block(
                    _Kind.TOOL,
                    tool_index=tool_index,
                    initial_input=initial if isinstance(initial, dict) else {},
                )
                # H.9 / C.2: the first delta of a call carries id, type, name and "" arguments.
                call = {
                    "index": tool_index,
                    "id": tool_id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
                out.append(self._chunk({"tool_calls": [call]}))
            case _:
                # server_tool_use, web_search_tool_result, mcp_tool_use, ... (P-B3) and block
                # types added later: the client cannot act on them, so all their deltas go.
                self._blocks[index] = _Block(_Kind.SKIP)
        return out

    def _on_block_delta(self, payload: JSONObject) -> list[Chunk]:
        block = self._block(payload)
        if block.kind is _Kind.SKIP:
            return []
        delta = payload.get("delta")
        kind = delta.get("type") if isinstance(delta, dict) else None
        if not isinstance(delta, dict) or not isinstance(kind, str):
            raise UpstreamProtocolError("upstream content_block_delta has no delta")
        expected = _DELTA_KIND.get(kind)
        if expected is None:
            return []  # citations_delta (P-C1) and delta types added later
        kind_of_block = _Kind.TOOL if block.kind is _Kind.JSON else block.kind
        if kind_of_block is not expected or block.stopped:
            raise UpstreamProtocolError(
                f"upstream sent {kind} for a {block.kind.name.lower()} block"
                + (" after it stopped" if block.stopped else "")
            )
        match kind:
            case "text_delta":
                text = _field(delta, "text")
                return self._content(text) if text else []
            case "thinking_delta":
                # An empty thinking_delta right before the signature is normal (H.14).
                text = _field(delta, "thinking")
                assert block.thinking is not None
                block.thinking["thinking"] += text
                return [self._chunk({"reasoning_content": text})] if text else []
            case "signature_delta":
                assert block.thinking is not None
                # The SDK replaces the signature with each signature_delta [S6 accumulate_event].
                block.thinking["signature"] = _field(delta, "signature")
                return []
            case _:  # input_json_delta
                # Passed through byte-exact; the first one is usually "" (H.14, C.2).
                fragment = _field(delta, "partial_json")
                if not fragment:
                    return []
                block.has_arguments = True
                if block.kind is _Kind.JSON:
                    return self._content(fragment)
                call = {"index": block.tool_index, "function": {"arguments": fragment}}
                return [self._chunk({"tool_calls": [call]})]

    def _on_block_stop(self, payload: JSONObject) -> list[Chunk]:
        block = self._block(payload)
        if block.stopped:
            raise UpstreamProtocolError("upstream stopped a content block twice")
        block.stopped = True
        if block.kind is _Kind.JSON and not block.has_arguments:
            # As for a tool below: the whole input came in content_block_start.
            return self._content(json.dumps(block.initial_input, ensure_ascii=False))
        if block.kind is _Kind.TOOL and not block.has_arguments:
            # A call that streamed no argument fragments: a tool without parameters (Anthropic
            # sends only "" and its input is `{}`), or a server that put the whole input in
            # content_block_start. The Anthropic SDK then keeps the start's `input` [S6]; send
            # it, so the client gets "{}" rather than "", which json.loads rejects.
            arguments = json.dumps(block.initial_input, ensure_ascii=False, separators=(",", ":"))
            call = {"index": block.tool_index, "function": {"arguments": arguments}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _on_message_delta(self, payload: JSONObject) -> None:
        delta = payload.get("delta")
        if isinstance(delta, dict) and "stop_reason" in delta:
            self._stop_reason = delta["stop_reason"]
        self._merge_usage(payload.get("usage"))

    def _final_chunks(self) -> list[Chunk]:
        stop_reason = self._stop_reason
        if (self._json_answer or self._meta.json_object) and not self._next_tool_index:
            # Only an answer is checked; a turn calling the client's tools is not one yet.
            check_json_object("".join(self._json_text), stop_reason)
            if stop_reason == "tool_use":
                stop_reason = "end_turn"  # the JSON_TOOL call was the answer
        out = self._release()
        if self._thinking_blocks:  # see "Thinking signatures" in the module docstring
            out.append(self._chunk({"thinking_blocks": self._thinking_blocks}))
        # C.2: the one finish chunk, with an empty delta.
        out.append(self._chunk({}, finish_reason=finish_reason(stop_reason)))
        if self._meta.include_usage:  # C.4
            out.append(usage_chunk(self._meta, openai_usage(self._raw_usage), model=self._model))
        return out

    # -- helpers -----------------------------------------------------------------------------

    def _content(self, text: str) -> list[Chunk]:
        """`content` chunks for `text`, or nothing yet while JSON mode holds it back."""
        if not (self._json_answer or self._meta.json_object):
            return [self._chunk({"content": text})]
        self._json_text.append(text)
        if self._opens_object:
            return [self._chunk({"content": text})]
        self._held.append(text)
        start = "".join(self._held).lstrip()
        if start.startswith("{"):
            self._opens_object = True
            return self._release()
        return []  # blank so far, or prose: held until a client tool call or the end

    def _release(self) -> list[Chunk]:
        if not self._held:
            return []
        text, self._held = "".join(self._held), []
        return [self._chunk({"content": text})]

    def _chunk(self, delta: JSONObject, *, finish_reason: str | None = None) -> Chunk:
        return chunk(self._meta, delta, finish_reason=finish_reason, model=self._model)

    def _block(self, payload: JSONObject) -> _Block:
        index = _index(payload)
        block = self._blocks.get(index)
        if block is None:
            raise UpstreamProtocolError(
                f"upstream sent {payload.get('type')} for content block {index}, "
                "which never started"
            )
        return block

    def _merge_usage(self, usage: Any) -> None:
        # H.12: message_delta usage counters are cumulative totals: those present overwrite,
        # null means "not reported" [S6 accumulate_event, S10]. Malformed counters are ignored
        # rather than failing an answer over its bookkeeping.
        if not isinstance(usage, dict):
            return
        for name in _USAGE_COUNTERS:
            value = usage.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                self._raw_usage[name] = value
        details = usage.get("output_tokens_details")
        if isinstance(details, dict):
            self._raw_usage["output_tokens_details"] = details


def _index(payload: JSONObject) -> int:
    index = payload.get("index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise UpstreamProtocolError(f"upstream {payload.get('type')} has no integer index")
    return index


def _field(delta: JSONObject, key: str) -> str:
    value = delta.get(key)
    if not isinstance(value, str):
        raise UpstreamProtocolError(f"upstream {delta.get('type')} has no string {key}")
    return value
