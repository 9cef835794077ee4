"""Neutral chat chunks -> OpenAI Responses stream events and response objects (outbound half of
the `/v1/responses` face).

Stage: translate (pure), between the engine and the Responses face. The engine yields OpenAI
`chat.completion.chunk` dicts whatever the upstream; `ChatToResponsesStream` turns them into the
events of a Responses stream (`feed(chunks) -> events`, `finish() -> events`, `fail(error) ->
events`), `sse_frame` frames one event as OpenAI sends it, and `chat_completion_to_response`
turns a non-streaming `chat.completion` into a `response` object by running it through the same
translator, so both answers agree. No IO, no clock, no randomness: the response id, the creation
time and the fallback model arrive in `ResponseMeta`, and every item id is derived from the
response id.

Invariants (event shapes from openai-python 3.57.0 `types/responses/*_event.py`; order as in
https://platform.openai.com/docs/api-reference/responses-streaming and the recorded stream
`tests/data/protocol/openai_responses/stream_text.sse`):
- every event has `type` and a `sequence_number` counting from 0 with no gap;
- the stream opens with `response.created` then `response.in_progress` (status `in_progress`,
  `output: []`), sent with the first chunk, so nothing is emitted before the upstream answered;
- every output item is announced (`response.output_item.added`) before any event that refers
  to it, and ended with `response.output_item.done`; a message's content parts likewise
  (`response.content_part.added` / `.done`), which openai-python's stream accumulator requires
  (`lib/streaming/responses/_responses.py` looks the part up by `content_index`);
- `output_index` counts output items from 0 in the order they are added; item ids are
  `msg_` / `rs_` / `fc_` + the response id's suffix + `_` + output_index; a function call's
  `call_id` is the chat tool call's `id` (the id the client echoes in function_call_output,
  MAPPING.md H.17);
- argument and text fragments pass through byte for byte, never re-serialised;
- exactly one terminal lifecycle event: `response.completed` or `response.incomplete` (from
  `finish()`) carrying the whole response (`output`, `usage`), or `response.failed` (from
  `fail()`) followed by one `error` event; nothing after it;
- `finish()` before a chunk with a `finish_reason` raises `UpstreamProtocolError` (a truncated
  answer is never a clean end); malformed chunks raise `UpstreamProtocolError`. Nothing else
  escapes `feed()` or `finish()`.

Theory of operation: the translator keeps the list of output items, at most one of them open,
as OpenAI streams them (one item ends before the next is added). A reasoning delta and a text
delta continue the open item if it is of their kind, else end it and add a new one; a tool call
with a new `index` ends the open item and adds a `function_call` item, and its argument
fragments continue it. Chat streams send parallel calls one after the other (OpenAI, and every
trioproxy translator); a fragment for a call that was already ended (a server interleaving two
calls) raises `UpstreamProtocolError` rather than being lost. A `finish_reason` ends the open
item (`incomplete` for `length` / `content_filter`); the terminal event waits for `finish()`
because the usage chunk comes after the finish chunk (MAPPING.md C.4).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trioproxy.errors import UpstreamProtocolError
from trioproxy.framing import error_body, json_bytes

if TYPE_CHECKING:
    from collections.abc import Mapping

    from trioproxy.errors import ProxyError

__all__ = [
    "ChatToResponsesStream",
    "ResponseMeta",
    "chat_completion_to_response",
    "error_event",
    "responses_usage",
    "sse_frame",
]

JSONObject = dict[str, Any]
Event = dict[str, Any]  # one Responses stream event, ready for json.dumps

# finish_reason -> incomplete_details.reason (the reverse of MAPPING.md E; reasons from
# openai-python `types/responses/response.py` IncompleteDetails).
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass(frozen=True, slots=True)
class ResponseMeta:
    """What the translator may not make up itself.

    Attributes:
        response_id: the `resp_...` id of this response; item ids are derived from it.
        created_at: epoch seconds, the response's `created_at`.
        model: the model reported until the first chunk names the upstream's.
        echo: the request parameters the response object repeats
            (`from_responses_request.ResponsesRequest.echo`).
    """

    response_id: str
    created_at: int
    model: str
    echo: Mapping[str, Any] = field(default_factory=dict)


class _Phase(enum.Enum):
    IDLE = enum.auto()  # nothing sent yet
    STREAMING = enum.auto()  # response.created sent
    FINISHING = enum.auto()  # a finish_reason came; waiting for usage and finish()
    DONE = enum.auto()  # the terminal event was sent


@dataclass(slots=True)
class _Part:
    kind: str  # "output_text" | "refusal"
    text: str = ""
    logprobs: list[JSONObject] = field(default_factory=list)


@dataclass(slots=True)
class _Item:
    kind: str  # "message" | "reasoning" | "function_call"
    index: int  # output_index
    id: str
    status: str = "in_progress"
    parts: list[_Part] = field(default_factory=list)  # message
    text: str = ""  # reasoning summary text
    call_id: str = ""  # function_call
    name: str = ""
    arguments: str = ""

    @property
    def open(self) -> bool:
        return self.status == "in_progress"


class ChatToResponsesStream:
    """Turns OpenAI chat chunks into OpenAI Responses stream events. Performs no IO.

    Call `feed()` with the chunks as the engine yields them, then `finish()` at the end of the
    chunk stream, or `fail(error)` when the engine raised after the response was committed (an
    error before that is an HTTP status with `framing.error_body`, not an event).

    Args:
        meta: the response id, creation time, fallback model and the request's echo.

    Example:
        >>> t = ChatToResponsesStream(ResponseMeta("resp_1", 0, "m"))
        >>> chunk = {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
        >>> [e["type"] for e in t.feed([chunk])]  # doctest: +NORMALIZE_WHITESPACE
        ['response.created', 'response.in_progress', 'response.output_item.added',
         'response.content_part.added', 'response.output_text.delta']
    """

    def __init__(self, meta: ResponseMeta) -> None:
        self._meta = meta
        self._phase = _Phase.IDLE
        self._model = meta.model
        self._seq = 0
        self._items: list[_Item] = []
        self._calls: dict[int, _Item] = {}  # chat tool_calls index -> item
        self._usage: JSONObject | None = None  # the chat usage, last one seen
        self._finish_reason: str | None = None
        self._response: JSONObject | None = None
        suffix = meta.response_id.removeprefix("resp_")
        self._id_suffix = suffix or meta.response_id

    @property
    def done(self) -> bool:
        """True once the terminal event (completed, incomplete or failed) was returned."""
        return self._phase is _Phase.DONE

    @property
    def response(self) -> JSONObject | None:
        """The response object of the terminal event, or None before it."""
        return self._response

    @property
    def usage(self) -> JSONObject | None:
        """The chat `usage` seen so far (for logs and metrics), or None."""
        return self._usage

    # -- the three entry points --------------------------------------------------------------

    def feed(self, chunks: list[JSONObject]) -> list[Event]:
        """Translate chunks; events after the terminal one are not produced (input ignored).

        Raises:
            UpstreamProtocolError: a chunk that is not a `chat.completion.chunk`, a choice other
                than index 0, a tool call without its id / name, or output after the finish.
        """
        out: list[Event] = []
        for chunk in chunks:
            if self._phase is _Phase.DONE:
                return out
            if not isinstance(chunk, dict):
                raise UpstreamProtocolError("a chat chunk is not a JSON object")
            if self._phase is _Phase.IDLE:
                model = chunk.get("model")
                if isinstance(model, str) and model:
                    self._model = model  # the upstream's, as the chat face reports it
                out += self._start()
            self._on_chunk(chunk, out)
        return out

    def finish(self, usage: JSONObject | None = None) -> list[Event]:
        """The end of the chunk stream: end open items and send the terminal event.

        Args:
            usage: the chat usage, when the caller holds it apart from the chunks (it wins over
                a usage chunk).

        Raises:
            UpstreamProtocolError: no chunk carried a `finish_reason` (a truncated answer is
                never a clean finish; the face then calls `fail()` with this error).
        """
        if self._phase is _Phase.DONE:
            return []
        if self._finish_reason is None:
            raise UpstreamProtocolError("the answer ended before a finish_reason")
        if isinstance(usage, dict):
            self._usage = usage
        out: list[Event] = []
        incomplete = _INCOMPLETE.get(self._finish_reason)
        self._close_all(out, status="incomplete" if incomplete else "completed")
        response = self._response_object(
            "incomplete" if incomplete else "completed",
            incomplete_details={"reason": incomplete} if incomplete else None,
            usage=responses_usage(self._usage) if self._usage is not None else None,
        )
        kind = "response.incomplete" if incomplete else "response.completed"
        out.append(self._event(kind, response=response))
        self._response = response
        self._phase = _Phase.DONE
        return out

    def fail(self, error: ProxyError) -> list[Event]:
        """End the stream with a failure: `response.failed`, then one `error` event.

        `response.failed` is the terminal lifecycle event clients wait for (it carries
        `response.error` and the output so far); the `error` event after it carries the error
        both flat (the documented `ResponseErrorEvent` fields) and nested under `error`, because
        openai-python and openai-node raise `APIError` only for a data object with an `error`
        key (openai-python `_streaming.py`, MAPPING.md E / H.18). Returns [] once terminal.
        """
        if self._phase is _Phase.DONE:
            return []
        out = self._start() if self._phase is _Phase.IDLE else []
        for item in self._items:
            if item.open:
                item.status = "incomplete"  # ended without their done events, as OpenAI does
        response = self._response_object(
            "failed",
            error={"code": error.code or "server_error", "message": error.message},
            usage=responses_usage(self._usage) if self._usage is not None else None,
        )
        out.append(self._event("response.failed", response=response))
        out.append(error_event(error, self._seq))
        self._seq += 1
        self._response = response
        self._phase = _Phase.DONE
        return out

    # -- chunks ------------------------------------------------------------------------------

    def _start(self) -> list[Event]:
        self._phase = _Phase.STREAMING
        return [
            self._event("response.created", response=self._response_object("in_progress")),
            self._event("response.in_progress", response=self._response_object("in_progress")),
        ]

    def _on_chunk(self, chunk: JSONObject, out: list[Event]) -> None:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = usage  # the usage chunk (choices: []) or a last chunk that carries it
        elif usage is not None:
            raise UpstreamProtocolError("a chat chunk has a usage that is not an object")
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise UpstreamProtocolError("a chat chunk has no choices array")
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                # The request never asks for n > 1 (a Responses request has no n).
                raise UpstreamProtocolError("a chat chunk has a choice other than index 0")
            self._on_choice(choice, out)

    def _on_choice(self, choice: JSONObject, out: list[Event]) -> None:
        delta = choice.get("delta")
        if delta is None:
            delta = {}
        if not isinstance(delta, dict):
            raise UpstreamProtocolError("a chat chunk has a delta that is not an object")
        # reasoning_content (DeepSeek / LiteLLM, and trioproxy's own translators), else
        # `reasoning` (OpenRouter) (MAPPING.md B.3).
        reasoning = delta.get("reasoning_content")
        if reasoning is None:
            reasoning = delta.get("reasoning")
        content, refusal = delta.get("content"), delta.get("refusal")
        tool_calls = delta.get("tool_calls")
        logprobs = _logprobs(choice.get("logprobs"))
        has_output = bool(reasoning or content or refusal or tool_calls or logprobs)
        if has_output and self._phase is _Phase.FINISHING:
            raise UpstreamProtocolError("a chat chunk has output after its finish_reason")
        if reasoning:
            self._reasoning(_string(reasoning, "reasoning_content"), out)
        if content or logprobs:
            self._text("output_text", _string(content or "", "content"), logprobs, out)
        if refusal:
            self._text("refusal", _string(refusal, "refusal"), [], out)
        if tool_calls is not None:
            if not isinstance(tool_calls, list):
                raise UpstreamProtocolError("a chat chunk has tool_calls that is not an array")
            for call in tool_calls:
                self._tool_call(call, out)
        finish_reason = choice.get("finish_reason")
        if finish_reason is not None:
            if not isinstance(finish_reason, str):
                raise UpstreamProtocolError("a chat chunk has a finish_reason that is not a string")
            if self._phase is _Phase.FINISHING:
                raise UpstreamProtocolError("a chat stream has a second finish_reason")
            self._finish_reason = finish_reason
            self._phase = _Phase.FINISHING
            self._close_all(
                out, status="incomplete" if finish_reason in _INCOMPLETE else "completed"
            )

    def _reasoning(self, text: str, out: list[Event]) -> None:
        # Reasoning text becomes a reasoning item's one summary part (summary_index 0): chat
        # upstreams give one reasoning text (reasoning_content), not OpenAI's raw reasoning,
        # which Responses only returns encrypted; the summary is the part clients display
        # (docs/translation-responses-inbound.md "Reasoning").
        item = self._last_open("reasoning")
        if item is None:
            item = self._open_item("reasoning", "rs", out)
            out.append(
                self._event(
                    "response.reasoning_summary_part.added",
                    item_id=item.id,
                    output_index=item.index,
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                )
            )
        item.text += text
        out.append(
            self._event(
                "response.reasoning_summary_text.delta",
                item_id=item.id,
                output_index=item.index,
                summary_index=0,
                delta=text,
            )
        )

    def _text(self, kind: str, text: str, logprobs: list[JSONObject], out: list[Event]) -> None:
        item = self._last_open("message")
        if item is None:
            item = self._open_item("message", "msg", out)
        part = item.parts[-1] if item.parts else None
        if part is None or part.kind != kind:
            if part is not None:
                self._close_part(item, out)
            part = _Part(kind)
            item.parts.append(part)
            out.append(
                self._event(
                    "response.content_part.added",
                    item_id=item.id,
                    output_index=item.index,
                    content_index=len(item.parts) - 1,
                    part=_part_json(_Part(kind)),
                )
            )
        part.text += text
        part.logprobs += logprobs
        if kind == "refusal":
            out.append(
                self._event(
                    "response.refusal.delta",
                    item_id=item.id,
                    output_index=item.index,
                    content_index=len(item.parts) - 1,
                    delta=text,
                )
            )
            return
        out.append(
            self._event(
                "response.output_text.delta",
                item_id=item.id,
                output_index=item.index,
                content_index=len(item.parts) - 1,
                delta=text,
                logprobs=[_delta_logprob(entry) for entry in logprobs],
            )
        )

    def _tool_call(self, call: Any, out: list[Event]) -> None:
        if not isinstance(call, dict):
            raise UpstreamProtocolError("a chat tool call delta is not an object")
        index = call.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise UpstreamProtocolError("a chat tool call delta has no integer index")
        function = call.get("function")
        if function is None:
            function = {}
        if not isinstance(function, dict):
            raise UpstreamProtocolError(
                "a chat tool call delta has a function that is not an object"
            )
        item = self._calls.get(index)
        if item is None:
            call_id, name = call.get("id"), function.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise UpstreamProtocolError("the first delta of a chat tool call has no id or name")
            item = self._open_item("function_call", "fc", out, call_id=call_id, name=name)
            self._calls[index] = item
        elif not item.open:
            raise UpstreamProtocolError(
                "a chat tool call continued after other output (interleaved tool calls cannot "
                "be streamed as Responses items)"
            )
        arguments = function.get("arguments")
        if arguments is None or arguments == "":
            return
        item.arguments += _string(arguments, "function.arguments")
        out.append(
            self._event(
                "response.function_call_arguments.delta",
                item_id=item.id,
                output_index=item.index,
                delta=arguments,
            )
        )

    # -- items -------------------------------------------------------------------------------

    def _last_open(self, kind: str) -> _Item | None:
        last = self._items[-1] if self._items else None
        return last if last is not None and last.kind == kind and last.open else None

    def _open_item(
        self, kind: str, prefix: str, out: list[Event], *, call_id: str = "", name: str = ""
    ) -> _Item:
        self._close_all(out, status="completed")  # one open item at a time, as OpenAI streams
        index = len(self._items)
        item = _Item(kind, index, f"{prefix}_{self._id_suffix}_{index}", call_id=call_id, name=name)
        self._items.append(item)
        out.append(
            self._event("response.output_item.added", output_index=index, item=_item_json(item))
        )
        return item

    def _close_all(self, out: list[Event], *, status: str) -> None:
        for item in self._items:
            if item.open:
                self._close(item, out, status=status)

    def _close(self, item: _Item, out: list[Event], *, status: str) -> None:
        if item.kind == "message":
            self._close_part(item, out)
        elif item.kind == "reasoning":
            out.append(
                self._event(
                    "response.reasoning_summary_text.done",
                    item_id=item.id,
                    output_index=item.index,
                    summary_index=0,
                    text=item.text,
                )
            )
            out.append(
                self._event(
                    "response.reasoning_summary_part.done",
                    item_id=item.id,
                    output_index=item.index,
                    summary_index=0,
                    part={"type": "summary_text", "text": item.text},
                )
            )
        else:
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item.id,
                    output_index=item.index,
                    name=item.name,
                    arguments=item.arguments,
                )
            )
        item.status = status
        out.append(
            self._event("response.output_item.done", output_index=item.index, item=_item_json(item))
        )

    def _close_part(self, item: _Item, out: list[Event]) -> None:
        if not item.parts:
            return
        part, content_index = item.parts[-1], len(item.parts) - 1
        if part.kind == "refusal":
            out.append(
                self._event(
                    "response.refusal.done",
                    item_id=item.id,
                    output_index=item.index,
                    content_index=content_index,
                    refusal=part.text,
                )
            )
        else:
            out.append(
                self._event(
                    "response.output_text.done",
                    item_id=item.id,
                    output_index=item.index,
                    content_index=content_index,
                    text=part.text,
                    logprobs=[_delta_logprob(entry) for entry in part.logprobs],
                )
            )
        out.append(
            self._event(
                "response.content_part.done",
                item_id=item.id,
                output_index=item.index,
                content_index=content_index,
                part=_part_json(part),
            )
        )

    # -- shapes ------------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> Event:
        event: Event = {"type": kind, "sequence_number": self._seq}
        event.update(fields)
        self._seq += 1
        return event

    def _response_object(
        self,
        status: str,
        *,
        error: JSONObject | None = None,
        incomplete_details: JSONObject | None = None,
        usage: JSONObject | None = None,
    ) -> JSONObject:
        # The shape of openai-python `types/responses/response.py` Response, in the order of the
        # recorded `stream_text.sse`. Request parameters come from the echo; the defaults are
        # what OpenAI reports when they were not sent.
        echo = self._meta.echo
        return {
            "id": self._meta.response_id,
            "object": "response",
            "created_at": self._meta.created_at,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": incomplete_details,
            "instructions": echo.get("instructions"),
            "max_output_tokens": echo.get("max_output_tokens"),
            "max_tool_calls": echo.get("max_tool_calls"),
            "model": self._model,
            "output": [_item_json(item) for item in self._items] if status != "in_progress" else [],
            "parallel_tool_calls": echo.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "prompt_cache_key": echo.get("prompt_cache_key"),
            "reasoning": echo.get("reasoning", {"effort": None, "summary": None}),
            "safety_identifier": echo.get("safety_identifier"),
            "service_tier": echo.get("service_tier"),
            "store": False,
            "temperature": echo.get("temperature"),
            "text": echo.get("text", {"format": {"type": "text"}}),
            "tool_choice": echo.get("tool_choice", "auto"),
            "tools": echo.get("tools", []),
            "top_logprobs": echo.get("top_logprobs", 0),
            "top_p": echo.get("top_p"),
            "truncation": echo.get("truncation", "disabled"),
            "usage": usage,
            "user": echo.get("user"),
            "metadata": echo.get("metadata", {}),
        }


# --- shapes ----------------------------------------------------------------------------------


def _item_json(item: _Item) -> JSONObject:
    if item.kind == "message":
        # response_output_message.py
        return {
            "id": item.id,
            "type": "message",
            "status": item.status,
            "content": [_part_json(part) for part in item.parts]
            if item.status != "in_progress"
            else [],
            "role": "assistant",
        }
    if item.kind == "reasoning":
        # response_reasoning_item.py; the summary is filled in at output_item.done, as OpenAI does.
        summary = [] if item.open else [{"type": "summary_text", "text": item.text}]
        return {"id": item.id, "type": "reasoning", "summary": summary}
    # response_function_tool_call.py
    return {
        "id": item.id,
        "type": "function_call",
        "status": item.status,
        "arguments": item.arguments if not item.open else "",
        "call_id": item.call_id,
        "name": item.name,
    }


def _part_json(part: _Part) -> JSONObject:
    if part.kind == "refusal":
        return {"type": "refusal", "refusal": part.text}  # response_output_refusal.py
    # response_output_text.py; output-text logprobs carry each token's bytes.
    return {"type": "output_text", "annotations": [], "logprobs": part.logprobs, "text": part.text}


def _logprobs(value: Any) -> list[JSONObject]:
    # Chat choice.logprobs = {content: [{token, logprob, bytes, top_logprobs: [...]}]}
    # (chat_completion_token_logprob.py): the same entries as Responses' output_text logprobs.
    if value is None:
        return []
    content = value.get("content") if isinstance(value, dict) else None
    if content is None:
        return []
    if not isinstance(content, list):
        raise UpstreamProtocolError("a chat chunk has logprobs.content that is not an array")
    out = []
    for entry in content:
        token = _token(entry)
        tops = entry.get("top_logprobs")
        token["top_logprobs"] = [_token(top) for top in tops] if isinstance(tops, list) else []
        out.append(token)
    return out


def _token(entry: Any) -> JSONObject:
    if not isinstance(entry, dict):
        raise UpstreamProtocolError("a chat logprobs entry is not an object")
    token, logprob, raw = entry.get("token"), entry.get("logprob"), entry.get("bytes")
    if not isinstance(token, str) or not isinstance(logprob, (int, float)):
        raise UpstreamProtocolError("a chat logprobs entry has no token or logprob")
    if not (isinstance(raw, list) and all(isinstance(b, int) for b in raw)):
        raw = list(token.encode("utf-8", "surrogatepass"))
    return {"token": token, "bytes": raw, "logprob": logprob}


def _delta_logprob(entry: JSONObject) -> JSONObject:
    # Delta events carry logprobs without bytes (response_text_delta_event.py Logprob).
    return {
        "token": entry["token"],
        "logprob": entry["logprob"],
        "top_logprobs": [
            {"token": top["token"], "logprob": top["logprob"]} for top in entry["top_logprobs"]
        ],
    }


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise UpstreamProtocolError(f"a chat chunk has a {name} that is not a string")
    return value


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def responses_usage(usage: Mapping[str, Any]) -> JSONObject:
    """A Responses `usage` object from a chat `usage` (the reverse of MAPPING.md E).

    input_tokens = prompt_tokens (cached tokens included in both); output_tokens =
    completion_tokens (reasoning included in both); the details' cached_tokens and
    reasoning_tokens (0 when not reported: `response_usage.py` requires both details objects);
    cache_write_tokens only when reported.
    """
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    total = usage.get("total_tokens")
    prompt_details = usage.get("prompt_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, dict) else {}
    completion_details = usage.get("completion_tokens_details")
    completion_details = completion_details if isinstance(completion_details, dict) else {}
    input_details: JSONObject = {"cached_tokens": _count(prompt_details.get("cached_tokens"))}
    if "cache_write_tokens" in prompt_details:
        input_details["cache_write_tokens"] = _count(prompt_details["cache_write_tokens"])
    return {
        "input_tokens": prompt,
        "input_tokens_details": input_details,
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": _count(completion_details.get("reasoning_tokens"))
        },
        "total_tokens": _count(total) if isinstance(total, int) else prompt + completion,
    }


def error_event(error: ProxyError, sequence_number: int) -> Event:
    """The `error` stream event for a failure after the response was committed.

    Flat fields as documented (`response_error_event.py`: code, message, param) plus the OpenAI
    error envelope under `error` (`framing.error_body`), the shape OpenAI sends on the wire
    (MAPPING.md H.18) and the one the SDKs raise `APIError` for.
    """
    return {
        "type": "error",
        "sequence_number": sequence_number,
        "code": error.code,
        "message": error.message,
        "param": error.param,
        "error": error_body(error)["error"],
    }


def sse_frame(event: Event) -> bytes:
    """One event as OpenAI frames a Responses stream: `event: <type>` then one `data:` line.

    Unlike the chat stream (DESIGN.md: never `event:`), the Responses stream names each event
    (MAPPING.md E; `tests/data/protocol/openai_responses/stream_text.sse`); the SDKs read the
    type from the data, so the name is for other clients. There is no `[DONE]` after the
    terminal event (MAPPING.md E, [S23]).
    """
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + json_bytes(event) + b"\n\n"


def chat_completion_to_response(completion: JSONObject, meta: ResponseMeta) -> JSONObject:
    """A non-streaming `chat.completion` -> a Responses `response` object.

    The completion is replayed as the chunks a stream would have carried (reasoning, text,
    refusal, each tool call whole, the finish reason, the usage) through `ChatToResponsesStream`,
    so the object equals the one a stream's terminal event carries. `output_text` is not added:
    it is an SDK-side convenience property, not part of the wire object.

    Raises:
        UpstreamProtocolError: the completion is not a `chat.completion` with one choice.
    """
    if not isinstance(completion, dict):
        raise UpstreamProtocolError("the chat completion is not a JSON object")
    choices = completion.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        raise UpstreamProtocolError("the chat completion does not have exactly one choice")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise UpstreamProtocolError("the chat completion's choice has no message")
    model = completion.get("model")
    base: JSONObject = {"model": model} if isinstance(model, str) else {}

    def chunk(delta: JSONObject, **extra: Any) -> JSONObject:
        return {**base, "choices": [{"index": 0, "delta": delta, **extra}]}

    chunks = []
    reasoning = message.get("reasoning_content")
    if reasoning is None:
        reasoning = message.get("reasoning")
    if reasoning:
        chunks.append(chunk({"reasoning_content": reasoning}))
    content = message.get("content")
    if isinstance(content, list):  # text parts, as some compatible servers answer
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    logprobs = choice.get("logprobs")
    if content or (isinstance(logprobs, dict) and logprobs.get("content")):
        chunks.append(chunk({"content": content or ""}, logprobs=logprobs))
    if message.get("refusal"):
        chunks.append(chunk({"refusal": message["refusal"]}))
    tool_calls = message.get("tool_calls")
    if tool_calls is not None:
        if not isinstance(tool_calls, list):
            raise UpstreamProtocolError("the chat completion has tool_calls that is not an array")
        for i, call in enumerate(tool_calls):
            if not isinstance(call, dict):
                raise UpstreamProtocolError("a chat completion tool call is not an object")
            chunks.append(chunk({"tool_calls": [{**call, "index": i}]}))
    finish_reason = choice.get("finish_reason")
    chunks.append(chunk({}, finish_reason=finish_reason if finish_reason is not None else "stop"))
    translator = ChatToResponsesStream(meta)
    translator.feed(chunks)
    usage = completion.get("usage")
    translator.finish(usage if isinstance(usage, dict) else None)
    response = translator.response
    assert response is not None  # finish() sets it
    return response
