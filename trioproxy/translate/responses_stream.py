"""OpenAI Responses stream events -> OpenAI `chat.completion.chunk` dicts (MAPPING.md E).

Stage: translate (pure), between the SSE decoder and the framing. `ResponsesStreamTranslator`
takes `SSEEvent`s from `SSEDecoder`, returns chunks, and performs no IO.

Invariants (base.py, DESIGN.md "The chat stream", CLIENT_EXPECTATIONS.md §5):
- the role chunk is the first chunk and the only one with `role`. It is held back from
  `response.created` until the first event that produces a chunk (E allows the deferral), so
  that an `error` arriving before any output (a rate limit right after `response.created`)
  leaves nothing emitted and the edge can still answer with an HTTP status, retry or fail over
  (P-F3). Its delta is `{"role": "assistant", "content": ""}`, or `content: null` when the
  answer opens with a tool call (as OpenAI's own Chat API does, and as the shared fixture
  `from_responses/stream_function_call.sse` shows);
- every chunk has `meta`'s id and created and one model: the upstream's (`response.model`) as
  known when the first chunk goes out, else `meta.model` (CLIENT_EXPECTATIONS §5.3);
- tool calls are numbered from 0 in the order their `function_call` items are added; the first
  delta of a call carries `id = item.call_id` (not the `fc_...` item id, H.17), `type`,
  `function.name` and `arguments: ""`; argument fragments pass through byte for byte;
- exactly one chunk has a finish_reason, sent at the terminal event (`response.completed`,
  `response.incomplete`, or `response.done` from compatible servers, H.18), followed by the
  usage chunk only when `meta.include_usage`;
- `response.failed` and `error` events (flat and nested, H.18) raise `UpstreamStatusError`;
  data that is not a JSON object raises `UpstreamProtocolError`, as does a function-call event
  for a call that was never added, and `[DONE]` before the terminal event; `finish()` raises
  `UpstreamProtocolError` unless the terminal event came (a truncated stream is never a clean
  finish, P-C3). Nothing else escapes `feed()` or `finish()`.

Theory of operation: events are dispatched on their JSON `type` (the `event:` name when the data
has none). `response.created` is not required: a compatible server that starts with output is
accepted, so the phase only goes STREAMING -> STOPPED. Function calls are remembered by item id
and by output index (E: "key by item_id; output_index also works"), with the argument text
streamed so far, so that `response.function_call_arguments.done` / `response.output_item.done`
can fill a gap: a server that sent the arguments only there (or only part of them as deltas)
still gets the rest forwarded, as a suffix, never re-sent. Reasoning text from summary parts and
raw `reasoning_text` parts is streamed as `reasoning_content`, with `"\n\n"` between parts
(P-RS1: decided on the first delta of each part, so empty parts add nothing). Events after the
terminal event are ignored, and so are event types this module does not know (hosted tools,
annotations, audio, and types added later).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

from trioproxy.errors import UpstreamProtocolError
from trioproxy.translate.base import chunk, load_event_json, usage_chunk
from trioproxy.translate.openai_common import error_from_object, is_blank, is_done_marker
from trioproxy.translate.responses_response import (
    chat_logprobs,
    failed_error,
    incomplete_finish_reason,
    openai_usage,
)

if TYPE_CHECKING:
    from trioproxy.sse import SSEEvent
    from trioproxy.translate.base import Chunk, JSONObject, StreamMeta

__all__ = ["ResponsesStreamTranslator"]


class _Phase(enum.Enum):
    STREAMING = enum.auto()
    STOPPED = enum.auto()


@dataclass(slots=True)
class _Call:
    index: int  # the OpenAI tool_calls index
    arguments: str = ""  # the argument text forwarded so far


# Events that carry nothing for a Chat client (E: "nothing (MAY be used to fill gaps)").
_QUIET = frozenset(
    {
        "response.in_progress",
        "response.queued",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.done",
        "response.refusal.done",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_part.done",
        "response.reasoning_summary_text.done",
        "response.reasoning_text.done",
    }
)


class ResponsesStreamTranslator:
    """Turns OpenAI Responses stream events into OpenAI chat chunks. Performs no IO.

    Args:
        meta: the completion id, creation time, fallback model and `include_usage`.

    Example:
        >>> from trioproxy.sse import SSEEvent
        >>> from trioproxy.translate.base import StreamMeta
        >>> t = ResponsesStreamTranslator(StreamMeta("chatcmpl-1", 0, "m"))
        >>> t.feed(SSEEvent('{"type": "response.created", "response": {"model": "gpt"}}'))
        []
        >>> [c["choices"][0]["delta"] for c in t.feed(SSEEvent(
        ...     '{"type": "response.output_text.delta", "item_id": "msg_1", "delta": "Hi"}'))]
        [{'role': 'assistant', 'content': ''}, {'content': 'Hi'}]
    """

    def __init__(self, meta: StreamMeta) -> None:
        self._meta = meta
        self._phase = _Phase.STREAMING
        self._model = meta.model  # replaced by the upstream's model once it is named
        self._usage: JSONObject | None = None  # the Chat usage, once the terminal event came
        self._calls: list[_Call] = []  # by OpenAI tool index
        self._call_by_item: dict[str, _Call] = {}  # function_call item id -> call
        self._call_by_output: dict[int, _Call] = {}  # output_index -> call
        self._reasoning_part: tuple[Any, ...] | None = None  # the part reasoning came from last
        self._role_sent = False

    @property
    def done(self) -> bool:
        """True once the terminal event was translated."""
        return self._phase is _Phase.STOPPED

    @property
    def usage(self) -> JSONObject | None:
        """The Chat usage (E) from the terminal event, or None before it."""
        return self._usage

    def feed(self, event: SSEEvent) -> list[Chunk]:
        """Translate one upstream event; see the module docstring for what can be raised."""
        out = self._translate(event)
        if out and not self._role_sent:
            self._role_sent = True
            first = out[0]["choices"]
            opens_with_tool = bool(first) and "tool_calls" in first[0]["delta"]
            role = {"role": "assistant", "content": None if opens_with_tool else ""}
            out.insert(0, self._chunk(role))
        return out

    def finish(self) -> list[Chunk]:
        """Signal the end of the upstream body.

        Raises:
            UpstreamProtocolError: no terminal event came (P-C3: a truncated stream is an
                error, never a clean finish).
        """
        if self._phase is not _Phase.STOPPED:
            raise UpstreamProtocolError("upstream stream ended before response.completed")
        return []

    # -- dispatch ----------------------------------------------------------------------------

    def _translate(self, event: SSEEvent) -> list[Chunk]:
        if self._phase is _Phase.STOPPED:
            return []  # after the terminal event everything is ignored ([DONE] included, H.18)
        if is_blank(event):
            return []
        if is_done_marker(event):
            # H.18: compatible servers may end with [DONE], but after the terminal event.
            raise UpstreamProtocolError("upstream sent [DONE] before response.completed")
        payload = load_event_json(event)  # UpstreamProtocolError, never JSONDecodeError
        kind = payload.get("type")
        if not isinstance(kind, str):
            kind = event.event  # the data usually repeats the `event:` name; fall back to it
        match kind:
            case "response.created":
                self._note_model(payload.get("response"))
                return []
            case "response.output_item.added":
                return self._on_item(payload, done=False)
            case "response.output_item.done":
                return self._on_item(payload, done=True)
            case "response.function_call_arguments.delta":
                return self._arguments(self._call_for(payload), _text(payload, "delta"))
            case "response.function_call_arguments.done":
                # A gap filler only: a call not yet added is started by output_item.done.
                arguments, known = payload.get("arguments"), self._find_call(payload)
                if not isinstance(arguments, str) or known is None:
                    return []
                return self._fill_arguments(known, arguments)
            case "response.output_text.delta":
                return self._on_text(payload)
            case "response.refusal.delta":
                text = _text(payload, "delta")
                return [self._chunk({"refusal": text})] if text else []
            case "response.reasoning_summary_text.delta":
                part = ("summary", payload.get("item_id"), payload.get("summary_index"))
                return self._reasoning(part, _text(payload, "delta"))
            case "response.reasoning_text.delta":
                part = ("text", payload.get("item_id"), payload.get("content_index"))
                return self._reasoning(part, _text(payload, "delta"))
            case "response.completed" | "response.incomplete" | "response.done":
                return self._on_terminal(kind, payload)
            case "response.failed":
                response = payload.get("response")
                raise failed_error(response if isinstance(response, dict) else {})
            case "error":
                raise _error_event(payload)
            case _:
                # _QUIET events, hosted tools, annotations, audio, and types added later.
                return []

    # -- events ------------------------------------------------------------------------------

    def _on_item(self, payload: JSONObject, *, done: bool) -> list[Chunk]:
        item = payload.get("item")
        if not isinstance(item, dict):
            raise UpstreamProtocolError(f"upstream {payload.get('type')} has no item object")
        if item.get("type") != "function_call":
            return []  # message / reasoning items start nothing; other item types are skipped
        item_id, output_index = item.get("id"), payload.get("output_index")
        call = self._call_by_item.get(item_id) if isinstance(item_id, str) else None
        if call is None and _is_index(output_index):
            call = self._call_by_output.get(output_index)
        out: list[Chunk] = []
        if call is None:
            # E: k = next_tool_index++; the first delta carries id = call_id (H.17), type,
            # name and "" arguments (H.9). A call first seen at output_item.done (a server
            # that skipped output_item.added) is started there.
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise UpstreamProtocolError("upstream function_call item has no call_id or name")
            call = _Call(len(self._calls))
            self._calls.append(call)
            if isinstance(item_id, str):
                self._call_by_item[item_id] = call
            if _is_index(output_index):
                self._call_by_output[output_index] = call
            start = {
                "index": call.index,
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            out.append(self._chunk({"tool_calls": [start]}))
        arguments = item.get("arguments")
        if done and isinstance(arguments, str):
            out += self._fill_arguments(call, arguments)
        return out

    def _find_call(self, payload: JSONObject) -> _Call | None:
        item_id, output_index = payload.get("item_id"), payload.get("output_index")
        call = self._call_by_item.get(item_id) if isinstance(item_id, str) else None
        if call is None and _is_index(output_index):
            call = self._call_by_output.get(output_index)
        return call

    def _call_for(self, payload: JSONObject) -> _Call:
        call = self._find_call(payload)
        if call is None:
            raise UpstreamProtocolError(
                f"upstream sent {payload.get('type')} for a function call that was never added"
            )
        return call

    def _arguments(self, call: _Call, fragment: str) -> list[Chunk]:
        # E: fragments pass through byte-exact, never re-serialised; "" is skipped.
        if not fragment:
            return []
        call.arguments += fragment
        delta = {"index": call.index, "function": {"arguments": fragment}}
        return [self._chunk({"tool_calls": [delta]})]

    def _fill_arguments(self, call: _Call, arguments: str) -> list[Chunk]:
        # The complete arguments: forward what the deltas did not carry (all of it, for a
        # server that sends none). Text that contradicts what was sent cannot be taken back and
        # is left alone.
        if len(arguments) > len(call.arguments) and arguments.startswith(call.arguments):
            return self._arguments(call, arguments[len(call.arguments) :])
        return []

    def _on_text(self, payload: JSONObject) -> list[Chunk]:
        text = _text(payload, "delta")
        logprobs = chat_logprobs(payload.get("logprobs"))
        if not text and not logprobs:
            return []
        out = self._chunk({"content": text})
        if logprobs:  # D: asked for with include ["message.output_text.logprobs"]
            out["choices"][0]["logprobs"] = {"content": logprobs, "refusal": None}
        return [out]

    def _reasoning(self, part: tuple[Any, ...], text: str) -> list[Chunk]:
        if not text:
            return []
        out = []
        if self._reasoning_part is not None and part != self._reasoning_part:
            out.append(self._chunk({"reasoning_content": "\n\n"}))  # P-RS1
        self._reasoning_part = part
        out.append(self._chunk({"reasoning_content": text}))
        return out

    def _on_terminal(self, kind: str, payload: JSONObject) -> list[Chunk]:
        response = payload.get("response")
        response = response if isinstance(response, dict) else {}
        status = response.get("status")
        if kind == "response.done" and status == "failed":  # H.18: response.done carries status
            raise failed_error(response)
        self._phase = _Phase.STOPPED
        self._note_model(response)
        self._usage = openai_usage(response.get("usage"))
        if kind == "response.incomplete" or status == "incomplete":
            # E: max_output_tokens -> length, content_filter -> content_filter.
            reason = incomplete_finish_reason(response)
        else:
            reason = "tool_calls" if self._calls else "stop"
        out = [self._chunk({}, finish_reason=reason)]
        if self._meta.include_usage:
            out.append(usage_chunk(self._meta, self._usage, model=self._model))
        return out

    # -- helpers -----------------------------------------------------------------------------

    def _note_model(self, response: Any) -> None:
        if self._role_sent:
            return  # §5.3: one model on every chunk, so it is fixed once a chunk went out
        model = response.get("model") if isinstance(response, dict) else None
        if isinstance(model, str) and model:
            self._model = model

    def _chunk(self, delta: JSONObject, *, finish_reason: str | None = None) -> Chunk:
        return chunk(self._meta, delta, finish_reason=finish_reason, model=self._model)


def _error_event(payload: JSONObject) -> Exception:
    # H.18: documented flat {type: "error", code, message, param} [S4 response_error_event.py],
    # observed nested {type: "error", error: {type, code, message, param}} [S16]. The event's
    # own `type` ("error") is not an error type: E says `type` = nested error.type or
    # "server_error". The status follows the code / type (openai_common), else 502.
    nested = payload.get("error")
    if isinstance(nested, dict):
        error = {key: nested.get(key, payload.get(key)) for key in ("message", "code", "param")}
        error["type"] = nested.get("type")
    else:
        error = {key: payload.get(key) for key in ("message", "code", "param")}
    return error_from_object(error, default_type="server_error", default_status=502)


def _text(payload: JSONObject, key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str):
        raise UpstreamProtocolError(f"upstream {payload.get('type')} has no string {key}")
    return value


def _is_index(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
