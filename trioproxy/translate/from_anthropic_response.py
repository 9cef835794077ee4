"""Neutral answers -> Anthropic Messages shapes: the non-streaming `message`, usage, stop reasons
and the error envelope (docs/translation-anthropic-inbound.md, "Answers" and "Errors").

Stage: translate (pure), outbound to a client that speaks Anthropic. The engine answers every
request in OpenAI's shapes (`chat.completion`, `chat.completion.chunk`, `ProxyError`); the
Anthropic face turns them into what the Messages API would have sent:

- `message_from_chat_completion`: one `chat.completion` dict -> one Anthropic `message` dict;
- `anthropic_usage` / `stop_reason_from_finish`: the rules the stream translator
  (`from_anthropic_stream`) shares with it;
- `anthropic_error`: any `ProxyError` -> `{"type": "error", "error": {"type", "message"}}` and the
  HTTP status, per Anthropic's error table (https://docs.anthropic.com/en/api/errors).

Invariants: no IO, no clock, no ids (the message id is passed in). Malformed upstream data raises
`UpstreamProtocolError`, never a KeyError or TypeError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trioproxy.errors import UpstreamProtocolError

if TYPE_CHECKING:
    from trioproxy.errors import ProxyError

__all__ = [
    "ANTHROPIC_ERROR_TYPES",
    "INVALID_ARGUMENTS_KEY",
    "AnthropicErrorResponse",
    "anthropic_error",
    "anthropic_error_type",
    "anthropic_usage",
    "message_from_chat_completion",
    "stop_reason_from_finish",
    "tool_input",
]

JSONObject = dict[str, Any]

# Anthropic's HTTP errors (https://docs.anthropic.com/en/api/errors): status -> error type.
# 502 / 503 (upstream trouble behind the proxy) have no row there and are `api_error`.
ANTHROPIC_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# Every type Anthropic names (anthropic-sdk-python types/shared/error_type.py, plus the docs'
# request_too_large): an upstream error already carrying one keeps it.
_KNOWN_TYPES = frozenset(
    {
        *ANTHROPIC_ERROR_TYPES.values(),
        "conflict_error",
        "memory_precondition_failed_error",
        "memory_path_conflict_error",
    }
)

# A tool call whose arguments are not a JSON object (a model's broken JSON, or a call cut by
# max_tokens) cannot be an Anthropic `input` object; the raw text is kept under this key so the
# client sees what the model produced instead of an empty input (inbound doc, "Answers").
INVALID_ARGUMENTS_KEY = "_raw_arguments"


# --- errors ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnthropicErrorResponse:
    """An error as the Messages API sends it: status, JSON body, extra headers (retry-after)."""

    status: int
    body: JSONObject
    headers: tuple[tuple[str, str], ...] = ()


def anthropic_error_type(error: ProxyError) -> str:
    """Anthropic's `error.type` for a ProxyError (ANTHROPIC_ERROR_TYPES by status first).

    >>> from trioproxy.errors import UpstreamTimeout, RateLimited
    >>> anthropic_error_type(UpstreamTimeout("slow")), anthropic_error_type(RateLimited("x"))
    ('timeout_error', 'rate_limit_error')
    """
    by_status = ANTHROPIC_ERROR_TYPES.get(error.status)
    if by_status is not None:
        return by_status
    if error.error_type in _KNOWN_TYPES:
        return error.error_type
    return "api_error" if error.status >= 500 or error.status < 400 else "invalid_request_error"


def anthropic_error(error: ProxyError, *, request_id: str | None = None) -> AnthropicErrorResponse:
    """The HTTP answer for a ProxyError in Anthropic's envelope.

    Args:
        error: any ProxyError (client fault, upstream fault, shutdown).
        request_id: the proxy's request id, sent as Anthropic does in the body's `request_id`.

    Returns:
        Status (the error's own, 500 if it is not an HTTP error status), the body
        `{"type": "error", "error": {"type", "message"}}` and the error's headers.

    Example:
        >>> from trioproxy.errors import UpstreamStatusError
        >>> answer = anthropic_error(UpstreamStatusError("Overloaded", upstream_status=529))
        >>> answer.status, answer.body["error"]
        (529, {'type': 'overloaded_error', 'message': 'Overloaded'})
    """
    status = error.status if 400 <= error.status <= 599 else 500
    body: JSONObject = {
        "type": "error",
        "error": {"type": anthropic_error_type(error), "message": error.message},
    }
    if request_id is not None:
        body["request_id"] = request_id
    return AnthropicErrorResponse(status=status, body=body, headers=error.headers)


# --- shared answer rules --------------------------------------------------------------------


def _count(container: object, key: str) -> int | None:
    value = container.get(key) if isinstance(container, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def anthropic_usage(usage: object) -> JSONObject:
    """An OpenAI `usage` object as Anthropic's (the inverse of MAPPING.md B.2).

    OpenAI's `prompt_tokens` includes cached tokens; Anthropic's `input_tokens` excludes cache
    reads and writes (its SDK totals `input + cache_creation + cache_read`, MAPPING.md [S9]). So
    `input_tokens = prompt - cached - cache_write`, `cache_read_input_tokens = cached_tokens`,
    `cache_creation_input_tokens = cache_write_tokens`, each cache field only when the upstream
    reported it; `output_tokens = completion_tokens` (reasoning included in both APIs), and
    `output_tokens_details.thinking_tokens = reasoning_tokens` when present.

    >>> anthropic_usage({"prompt_tokens": 412, "completion_tokens": 9,
    ...                  "prompt_tokens_details": {"cached_tokens": 400}})
    {'input_tokens': 12, 'output_tokens': 9, 'cache_read_input_tokens': 400}
    """
    if usage is not None and not isinstance(usage, dict):
        raise UpstreamProtocolError("upstream usage is not a JSON object")
    prompt = _count(usage, "prompt_tokens") or 0
    details = usage.get("prompt_tokens_details") if usage else None
    cached = _count(details, "cached_tokens")
    written = _count(details, "cache_write_tokens")
    out: JSONObject = {
        "input_tokens": max(0, prompt - (cached or 0) - (written or 0)),
        "output_tokens": _count(usage, "completion_tokens") or 0,
    }
    if written is not None:
        out["cache_creation_input_tokens"] = written
    if cached is not None:
        out["cache_read_input_tokens"] = cached
    reasoning = _count(
        usage.get("completion_tokens_details") if usage else None, "reasoning_tokens"
    )
    if reasoning is not None:
        out["output_tokens_details"] = {"thinking_tokens": reasoning}
    return out


def stop_reason_from_finish(
    finish_reason: object,
    *,
    matched_stop: object = None,
    stop_sequences: tuple[str, ...] = (),
    had_tool_use: bool = False,
) -> tuple[str, str | None]:
    """(`stop_reason`, `stop_sequence`) for an OpenAI `finish_reason` (inbound doc table).

    Args:
        finish_reason: the choice's finish_reason.
        matched_stop: the choice's `stop_reason`, a vLLM extension naming the stop string that
            matched (vllm `entrypoints/openai/protocol.py`, `ChatCompletionResponseChoice` and
            `ChatCompletionResponseStreamChoice.stop_reason`); OpenAI does not say which
            sequence stopped the answer.
        stop_sequences: the client's stop sequences.
        had_tool_use: whether the answer carried tool calls (some compatible servers finish a
            tool-call answer with `stop`).

    >>> stop_reason_from_finish("length")
    ('max_tokens', None)
    >>> stop_reason_from_finish("stop", matched_stop="END", stop_sequences=("END",))
    ('stop_sequence', 'END')
    """
    match finish_reason:
        case "length":
            return "max_tokens", None
        case "tool_calls" | "function_call":
            return "tool_use", None
        case "content_filter":
            return "refusal", None
        case _:
            if isinstance(matched_stop, str) and matched_stop in stop_sequences:
                return "stop_sequence", matched_stop
            if had_tool_use:
                return "tool_use", None
            return "end_turn", None  # `stop` and anything unknown


def tool_input(arguments: object) -> JSONObject:
    """A tool call's arguments string as an Anthropic `input` object (INVALID_ARGUMENTS_KEY)."""
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if not isinstance(arguments, str):
        raise UpstreamProtocolError("upstream tool call arguments are not a string")
    try:
        parsed = json.loads(arguments)
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, dict):
        return parsed
    return {INVALID_ARGUMENTS_KEY: arguments}


# --- non-streaming ------------------------------------------------------------------------------


def message_from_chat_completion(
    completion: object,
    *,
    message_id: str,
    model: str,
    stop_sequences: tuple[str, ...] = (),
) -> JSONObject:
    """One `chat.completion` as an Anthropic `message` (inbound doc, "Answers").

    Content blocks come in Anthropic's order: thinking, text, tool_use. Thinking is
    `message.thinking_blocks` when the upstream gave them (with signatures), else one thinking
    block from `reasoning_content` (or OpenRouter's `reasoning`) with an empty signature: only
    Anthropic can sign thinking.

    Args:
        completion: the engine's non-streaming answer.
        message_id: the `msg_...` id to report (ids are passed in, never made here).
        model: the model name to report.
        stop_sequences: the client's stop sequences (for `stop_reason: "stop_sequence"`).

    Raises:
        UpstreamProtocolError: the completion is not a chat.completion with one choice.
    """
    if not isinstance(completion, dict):
        raise UpstreamProtocolError("upstream answer is not a JSON object")
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UpstreamProtocolError("upstream answer has no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise UpstreamProtocolError("upstream answer's choice has no message")

    content: list[JSONObject] = _thinking_blocks(message)
    text = message.get("content")
    if isinstance(text, str):
        if text:
            content.append({"type": "text", "text": text})
    elif isinstance(text, list):
        for part in text:
            if isinstance(part, dict) and isinstance(part.get("text"), str) and part["text"]:
                content.append({"type": "text", "text": part["text"]})
    elif text is not None:
        raise UpstreamProtocolError("upstream message content is not a string")
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})

    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise UpstreamProtocolError("upstream tool_calls is not an array")
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str):
            raise UpstreamProtocolError("upstream tool call has no id or function")
        name = function.get("name")
        if not isinstance(name, str):
            raise UpstreamProtocolError("upstream tool call has no function name")
        content.append(
            {
                "type": "tool_use",
                "id": call["id"],
                "name": name,
                "input": tool_input(function.get("arguments")),
            }
        )

    stop_reason, stop_sequence = stop_reason_from_finish(
        choice.get("finish_reason"),
        matched_stop=choice.get("stop_reason"),
        stop_sequences=stop_sequences,
        had_tool_use=bool(calls),
    )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": anthropic_usage(completion.get("usage")),
    }


def _thinking_blocks(message: JSONObject) -> list[JSONObject]:
    blocks: list[JSONObject] = []
    given = message.get("thinking_blocks")
    if isinstance(given, list):
        for entry in given:
            if not isinstance(entry, dict):
                continue
            if entry.get("type") == "thinking" and isinstance(entry.get("thinking"), str):
                signature = entry.get("signature")
                blocks.append(
                    {
                        "type": "thinking",
                        "thinking": entry["thinking"],
                        "signature": signature if isinstance(signature, str) else "",
                    }
                )
            elif entry.get("type") == "redacted_thinking" and isinstance(entry.get("data"), str):
                blocks.append({"type": "redacted_thinking", "data": entry["data"]})
        if blocks:
            return blocks
    reasoning = message.get("reasoning_content")
    if not isinstance(reasoning, str) or not reasoning:
        reasoning = message.get("reasoning")  # OpenRouter's name (MAPPING.md B.3 [S15])
    if isinstance(reasoning, str) and reasoning:
        blocks.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    return blocks
