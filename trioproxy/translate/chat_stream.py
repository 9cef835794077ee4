"""OpenAI-compatible chat chunk stream -> the chat chunk stream trioproxy promises (MAPPING.md G).

Stage: translate (pure), between the SSE decoder and the framing. `ChatStreamTranslator` takes
`SSEEvent`s from `SSEDecoder`, returns chunks, and performs no IO.

The upstream already speaks Chat Completions, so chunks pass through with their provider fields
(`reasoning_content` from DeepSeek, `reasoning` / `reasoning_details` from OpenRouter, extra
usage keys such as `prompt_cache_hit_tokens`, `system_fingerprint`, ...). What compatible
servers do differently is re-framed so that the contract of base.py / CLIENT_EXPECTATIONS.md §5
holds whatever the upstream does:

- one `id`, `created` and `model` on every chunk (§5.3): the first non-empty value each upstream
  chunk offers, fixed once the first chunk goes out (Azure opens with a chunk whose id and model
  are empty); `meta`'s values only when the upstream never names them;
- exactly one role chunk, first (§5.4, H.7). The upstream's own first chunk is kept when it
  carries `role`; otherwise `{"role": "assistant", "content": ""}` is put in front. A role chunk
  with nothing else in it is held back until the first chunk with content, so that an error
  arriving before any output can still be answered with an HTTP status (P-F3). Any later `role`
  is removed (openai-python would concatenate it: `assistantassistant`), and the one kept is
  `"assistant"` whatever the upstream called it (`role: null` counts as none);
- tool calls are numbered from 0 in the order they appear (H.8), whatever index the upstream
  used (some count from 1, some leave it out: then a new id starts a call and a delta without
  one continues the last; some put every call at index 0: then a new id with a name starts a
  call); `id`, `type` and `function.name` appear only in a
  call's first delta (§5.5, H.7; openai-python concatenates repeats into `call_1call_1`), which
  also gets `type: "function"` and `arguments: ""` when the upstream left them out (H.9);
  argument fragments pass through unchanged;
- exactly one finish chunk, `delta: {}`, after all content (§5.6): the upstream's finish_reason
  is held until the stream ends, and content that came with it is sent on its own first. A
  second finish_reason is ignored;
- usage is never left on a content chunk: the last usage object the upstream sent (some send it
  on the last content chunk, some on every chunk, OpenAI on a final `choices: []` chunk) goes
  out once, after the finish chunk, in a `choices: []` chunk, and only when the client asked
  (`meta.include_usage`, §5.7, C.4). The dialect always asks the upstream for usage (for
  metering); when the client did not, the usage chunk is dropped (G, [S18]). When the client
  asked but the upstream never reported usage, the usage chunk carries zero counts (the
  contract promises one) while `usage` stays None;
- `[DONE]` is the terminal event (it is not a chunk: the framing writes its own). A stream that
  ends without `[DONE]` after a finish_reason is accepted as finished: many compatible servers
  simply close the connection there. A stream that ends before any finish_reason raises
  `UpstreamProtocolError` (never a clean finish). A `[DONE]` without any finish_reason is an
  explicit end, so a finish chunk is made up (`tool_calls` if calls were streamed, else `stop`).

Errors: a chunk with a truthy `error` (G: "Upstream mid-stream {"error": ...} chunks are
forwarded") raises `UpstreamStatusError` with the upstream's message, type, param and code
(`"error": null` is ignored, H.4); so does data with no `error` key under an `event: error` name
(openai-node treats that as an error too, CLIENT_EXPECTATIONS §2.3). Otherwise `event:` names
are ignored. Data that is not a JSON object (`data: null`, a number, broken JSON), `choices`
that is not a list, or a choice other than index 0 raise `UpstreamProtocolError`. Comments and
empty `data:` lines carry nothing. Chunks whose delta holds nothing (no content, no tool call,
no provider field with a value) are dropped.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, TypeGuard

from trioproxy.errors import UpstreamProtocolError
from trioproxy.translate.base import load_event_json
from trioproxy.translate.openai_common import error_from_object, is_blank, is_done_marker

if TYPE_CHECKING:
    from trioproxy.sse import SSEEvent
    from trioproxy.translate.base import Chunk, JSONObject, StreamMeta

__all__ = ["ChatStreamTranslator"]

# Top-level chunk keys the translator sets itself (and `error`, which is null when it gets this
# far and must not reach a client's chunk: CLIENT_EXPECTATIONS §5.9); every other key
# (system_fingerprint, service_tier, provider, obfuscation, ...) is copied from the upstream.
_OWN_KEYS = ("id", "object", "created", "model", "choices", "usage", "error")
# Choice keys the translator sets itself on the finish chunk; others (vLLM's stop_reason,
# matched_stop, native_finish_reason, ...) go with it.
_OWN_CHOICE_KEYS = ("index", "delta", "logprobs", "finish_reason")
_ZERO_USAGE: JSONObject = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


class _Phase(enum.Enum):
    STREAMING = enum.auto()
    FINISHED = enum.auto()  # a finish_reason came; [DONE] (or EOF) may follow
    DONE = enum.auto()  # [DONE] came


class ChatStreamTranslator:
    """Re-frames an OpenAI-compatible chat chunk stream (see the module docstring). No IO.

    Args:
        meta: fallback id / created / model, and `include_usage` (what the client asked).

    Example:
        >>> from trioproxy.sse import SSEEvent
        >>> from trioproxy.translate.base import StreamMeta
        >>> t = ChatStreamTranslator(StreamMeta("chatcmpl-1", 0, "m"))
        >>> t.feed(SSEEvent('{"id": "x", "choices": [{"delta": {"role": "assistant"}}]}'))
        []
        >>> [c["choices"][0]["delta"] for c in t.feed(SSEEvent(
        ...     '{"id": "x", "choices": [{"delta": {"role": "assistant", "content": "Hi"}}]}'))]
        [{'role': 'assistant'}, {'content': 'Hi'}]
    """

    def __init__(self, meta: StreamMeta) -> None:
        self._meta = meta
        self._phase = _Phase.STREAMING
        self._id: str | None = None
        self._created: int | None = None
        self._model: str | None = None
        self._started = False  # a chunk went out: id / created / model are fixed
        self._role_sent = False
        self._pending_role: Chunk | None = None  # the upstream's content-less role chunk
        self._finish: Chunk | None = None  # the held finish chunk
        self._usage: JSONObject | None = None  # the last usage object the upstream sent
        # Tool calls, by OpenAI index (H.8): each one's upstream id, and the maps from the
        # upstream's index and id to it.
        self._tool_ids: list[str | None] = []
        self._slot_of_index: dict[int, int] = {}
        self._slot_of_id: dict[str, int] = {}
        self._last_tool: int | None = None  # the call the last tool delta belonged to

    @property
    def done(self) -> bool:
        """True once `[DONE]` was translated."""
        return self._phase is _Phase.DONE

    @property
    def usage(self) -> JSONObject | None:
        """The upstream's last usage object, or None if it sent none (yet)."""
        return self._usage

    def feed(self, event: SSEEvent) -> list[Chunk]:
        """Translate one upstream event; see the module docstring for what can be raised."""
        if self._phase is _Phase.DONE or is_blank(event):
            return []
        if is_done_marker(event):
            self._phase = _Phase.DONE
            return self._emit(self._final_chunks())
        payload = load_event_json(event)  # `data: null` and friends: UpstreamProtocolError
        error = payload.get("error")
        if error:
            raise error_from_object(error)  # G / H.4; `"error": null` falls through
        if event.event == "error":
            raise error_from_object(payload)  # a flat error under an `event: error` name
        self._stamp(payload)
        usage = payload.get("usage")
        if isinstance(usage, dict):
            self._usage = usage  # the last one wins, as in openai-python's accumulator [S2]
        choices = payload.get("choices")
        if choices is None:
            return []
        if not isinstance(choices, list):
            raise UpstreamProtocolError("upstream chunk has choices that are not a list")
        out: list[Chunk] = []
        for choice in choices:
            out += self._on_choice(payload, choice)
        return self._emit(out)

    def finish(self) -> list[Chunk]:
        """Signal the end of the upstream body.

        Raises:
            UpstreamProtocolError: the stream ended before any finish_reason.
        """
        if self._phase is _Phase.DONE:
            return []
        if self._phase is _Phase.STREAMING:
            raise UpstreamProtocolError("upstream stream ended before a finish_reason")
        # A finish_reason came but no [DONE]: accepted as finished (module docstring).
        self._phase = _Phase.DONE
        return self._emit(self._final_chunks())

    # -- chunks ------------------------------------------------------------------------------

    def _on_choice(self, payload: JSONObject, choice: Any) -> list[Chunk]:
        if not isinstance(choice, dict):
            raise UpstreamProtocolError("upstream chunk has a choice that is not an object")
        index = choice.get("index")
        if index is not None and (index != 0 or isinstance(index, bool)):
            # n > 1 is refused before the request is sent; another choice is the upstream's bug.
            raise UpstreamProtocolError(f"upstream sent choice {index!r}; only 0 was asked for")
        delta = choice.get("delta")
        if delta is None:
            delta = {}
        if not isinstance(delta, dict):
            raise UpstreamProtocolError("upstream chunk has a delta that is not an object")
        delta = self._clean_delta(delta)
        out: list[Chunk] = []
        logprobs = choice.get("logprobs")
        if "role" in delta:
            rest = {k: v for k, v in delta.items() if k != "role"}
            if not _holds_something(rest) and logprobs is None:
                self._pending_role = self._frame(payload, choice, delta)  # P-F3: hold it
                delta = {}
            else:
                self._role_sent = True
        if _holds_something(delta) or logprobs is not None:
            out.append(self._frame(payload, choice, delta))
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason and self._finish is None:
            finish_choice = {k: v for k, v in choice.items() if k not in _OWN_CHOICE_KEYS}
            finish_choice.update(index=0, delta={}, logprobs=None, finish_reason=reason)
            self._finish = self._envelope(payload, finish_choice)
            self._phase = _Phase.FINISHED
        return out

    def _clean_delta(self, delta: JSONObject) -> JSONObject:
        delta = dict(delta)
        if "role" in delta and (
            self._role_sent or self._pending_role is not None or not delta["role"]
        ):
            del delta["role"]  # H.7: role exactly once (and `role: null` is no role)
        elif "role" in delta:
            delta["role"] = "assistant"  # the one role a chunk can carry (a server's "model"...)
        calls = delta.get("tool_calls")
        if calls is None:
            delta.pop("tool_calls", None)
        else:
            if not isinstance(calls, list):
                raise UpstreamProtocolError("upstream delta has tool_calls that are not a list")
            cleaned = [c for c in (self._tool_delta(call) for call in calls) if c is not None]
            if cleaned:
                delta["tool_calls"] = cleaned
            else:
                del delta["tool_calls"]
        return delta

    def _tool_delta(self, call: Any) -> JSONObject | None:
        if not isinstance(call, dict):
            raise UpstreamProtocolError("upstream tool call delta is not an object")
        out: JSONObject = dict(call)
        function = out.get("function")
        function = dict(function) if isinstance(function, dict) else {}
        slot = self._tool_slot(out, function)
        if slot is None:
            # H.8: count calls from 0; H.9: the first delta has id, type, name and arguments.
            slot = self._new_tool_slot(out)
            out["index"] = slot
            if out.get("type") is None:
                out["type"] = "function"
            if function.get("arguments") is None:
                function["arguments"] = ""
            out["function"] = function
            return out
        out["index"] = slot
        self._last_tool = slot
        # §5.5 / H.7: later deltas carry only index and argument fragments.
        for name in ("id", "type"):
            out.pop(name, None)
        function.pop("name", None)
        if function.get("arguments") is None:
            function.pop("arguments", None)
        if function:
            out["function"] = function
        else:
            out.pop("function", None)
        if set(out) == {"index"}:
            return None  # nothing left but the index: a repeat of the call's start
        return out

    def _tool_slot(self, call: JSONObject, function: JSONObject) -> int | None:
        """The OpenAI index of the call this delta continues, or None for a new call."""
        upstream_index, call_id = call.get("index"), call.get("id")
        call_id = call_id if isinstance(call_id, str) and call_id else None
        if _is_int(upstream_index):
            slot = self._slot_of_index.get(upstream_index)
            known_id = self._tool_ids[slot] if slot is not None else None
            if known_id and call_id and call_id != known_id and function.get("name"):
                return None  # the upstream reused an index for a new call (its own id, name)
            return slot
        # No index (some servers leave it out): a new id starts a call, no id continues one.
        if call_id is not None:
            return self._slot_of_id.get(call_id)
        return self._last_tool

    def _new_tool_slot(self, call: JSONObject) -> int:
        slot = len(self._tool_ids)
        upstream_index, call_id = call.get("index"), call.get("id")
        call_id = call_id if isinstance(call_id, str) and call_id else None
        self._tool_ids.append(call_id)
        if _is_int(upstream_index):
            self._slot_of_index[upstream_index] = slot
        if call_id is not None:
            self._slot_of_id[call_id] = slot
        self._last_tool = slot
        return slot

    def _final_chunks(self) -> list[Chunk]:
        finish = self._finish
        if finish is None:  # [DONE] without a finish_reason (module docstring)
            reason = "tool_calls" if self._tool_ids else "stop"
            finish = self._envelope({}, _choice({}, finish_reason=reason))
        out = [finish]
        if self._meta.include_usage:
            usage = self._usage if self._usage is not None else dict(_ZERO_USAGE)
            out.append(self._envelope({}, None, usage=usage))
        return out

    # -- framing -----------------------------------------------------------------------------

    def _emit(self, chunks: list[Chunk]) -> list[Chunk]:
        if not chunks:
            return chunks
        if not self._role_sent:
            self._role_sent = True
            role = self._pending_role
            if role is None:
                role = self._envelope({}, _choice({"role": "assistant", "content": ""}))
            chunks.insert(0, role)
        self._started = True
        stamp = {"id": self._chunk_id, "created": self._chunk_created, "model": self._chunk_model}
        for item in chunks:
            item.update(stamp)  # §5.3: one id / created / model for the whole stream
        return chunks

    def _frame(self, payload: JSONObject, choice: JSONObject, delta: JSONObject) -> Chunk:
        framed = dict(choice)
        framed.update(index=0, delta=delta, finish_reason=None)
        framed.setdefault("logprobs", None)
        return self._envelope(payload, framed)

    def _envelope(
        self, payload: JSONObject, choice: JSONObject | None, *, usage: JSONObject | None = None
    ) -> Chunk:
        out: Chunk = {
            "id": self._chunk_id,
            "object": "chat.completion.chunk",
            "created": self._chunk_created,
            "model": self._chunk_model,
            "choices": [] if choice is None else [choice],
        }
        for key, value in payload.items():
            if key not in _OWN_KEYS:
                out[key] = value
        out["usage"] = usage
        return out

    def _stamp(self, payload: JSONObject) -> None:
        if self._started:
            return
        chunk_id, created, model = payload.get("id"), payload.get("created"), payload.get("model")
        if self._id is None and isinstance(chunk_id, str) and chunk_id:
            self._id = chunk_id
        if self._created is None and _is_int(created) and created > 0:
            self._created = created
        if self._model is None and isinstance(model, str) and model:
            self._model = model

    @property
    def _chunk_id(self) -> str:
        return self._id if self._id is not None else self._meta.completion_id

    @property
    def _chunk_created(self) -> int:
        return self._created if self._created is not None else self._meta.created

    @property
    def _chunk_model(self) -> str:
        return self._model if self._model is not None else self._meta.model


def _holds_something(delta: JSONObject) -> bool:
    # A delta worth a chunk: some key with a value (content "" and null fields are nothing).
    return any(value not in (None, "", [], {}) for value in delta.values())


def _choice(delta: JSONObject, *, finish_reason: str | None = None) -> JSONObject:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
