"""Anthropic Messages answers -> OpenAI shapes: bodies, usage, finish reasons, errors.

Stage: translate (pure). Used by `AnthropicDialect.translate_response` (a non-streaming body,
MAPPING.md B), `AnthropicDialect.translate_error` (a non-2xx answer, F.1) and by the stream
translator (`anthropic_stream`) for the tables they share (B.1 finish reasons, B.2 usage, the
error types of F.1).

Invariants:
- Upstream faults surface as `UpstreamProtocolError` (a body that is not the documented shape) or
  `UpstreamStatusError` (an error the upstream reported); nothing else escapes.
- Nothing the upstream sent is echoed into an error message without passing `scrub()` first: an
  error page may quote request headers, and keys must never reach a client or a log.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

from trioproxy.errors import UpstreamProtocolError, UpstreamStatusError
from trioproxy.translate.anthropic_request import JSON_TOOL

if TYPE_CHECKING:
    from trioproxy.translate.base import JSONObject, StreamMeta

__all__ = [
    "ERROR_TYPE_STATUS",
    "FINISH_REASONS",
    "check_json_object",
    "error_from_body",
    "error_from_event",
    "finish_reason",
    "openai_usage",
    "scrub",
    "translate_response",
]

logger = logging.getLogger("trioproxy.translate.anthropic")

# B.1 (tables/stop_reason_to_finish_reason.json), values from [S7 stop_reason.py].
FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",  # the matched sequence is not in the text; OpenAI omits it too
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",  # a server-tool turn paused; no OpenAI equivalent
    "refusal": "content_filter",  # as LiteLLM's _FINISH_REASON_MAP [S14]
}

# F.1: the HTTP status each Anthropic error type stands for [S7 shared/error_type.py]. Used for
# `error` events inside a 200 stream ("overloaded_error" is 529 [S11]) and as the default type
# for a bare status below.
ERROR_TYPE_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_TYPE_OF_STATUS = {status: kind for kind, status in ERROR_TYPE_STATUS.items()}
_UNKNOWN_ERROR_STATUS = 502  # an error event of a type we do not know: still an upstream fault

# F.1: headers worth forwarding, and their names for the client. `request-id` becomes
# `x-request-id`, which openai-python exposes as `e.request_id` [S1].
_FORWARDED_HEADERS = {
    "retry-after": "retry-after",
    "retry-after-ms": "retry-after-ms",
    "x-should-retry": "x-should-retry",
    "request-id": "x-request-id",
}

_EXCERPT_CHARS = 200  # of a non-Anthropic error body quoted in the message
_SCRUB_WINDOW = 4 * _EXCERPT_CHARS  # scrubbed before cutting, so a cut key is still caught
# Anything that looks like a credential: provider keys (sk-ant-api03-..., sk-proj-..., sk-...),
# bearer tokens and `api-key: value` pairs as error pages may quote them.
_SECRETS = (
    (re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-]{6,}"), "[redacted]"),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=\-]{6,}"), r"\1[redacted]"),
    (
        re.compile(r"(?i)\b((?:x-)?api[-_]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]{6,}"),
        r"\1[redacted]",
    ),
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def finish_reason(stop_reason: Any) -> str:
    """The OpenAI finish_reason for an Anthropic stop_reason (B.1); unknown / null -> "stop"."""
    if isinstance(stop_reason, str) and stop_reason in FINISH_REASONS:
        return FINISH_REASONS[stop_reason]
    if stop_reason is not None:
        logger.warning("unknown Anthropic stop_reason %r, reported as 'stop'", stop_reason)
    return "stop"


def check_json_object(text: str, stop_reason: Any) -> None:
    """JSON mode's promise: the answer parses as a JSON object (anthropic_request "JSON mode").

    Raises:
        UpstreamProtocolError: it does not (502 `upstream_protocol_error`): a client that asked
            for `json_object` gets an honest error, never prose in the JSON slot.
    """
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, dict):
        return
    if stop_reason == "max_tokens":
        why = "its answer was cut off at max_tokens; raise max_tokens"
    elif stop_reason == "refusal":
        why = "it refused to answer"
    elif value is None:
        why = "its answer is not JSON"
    else:
        why = f"its answer is a JSON {type(value).__name__}, not an object"
    raise UpstreamProtocolError(
        'the model did not return a JSON object for response_format {"type": "json_object"}: ' + why
    )


def openai_usage(usage: JSONObject) -> JSONObject:
    """An OpenAI `usage` object from Anthropic usage counters (B.2, tables/usage.json).

    Anthropic's input_tokens excludes cache reads and writes [S9]; OpenAI's prompt_tokens
    includes them, with the cached reads as `prompt_tokens_details.cached_tokens` [S3].
    output_tokens already includes thinking tokens. `reasoning_tokens` is only reported when
    the upstream counted them (output_tokens_details.thinking_tokens [S7]).
    """
    cache_write = _count(usage.get("cache_creation_input_tokens"))
    cache_read = _count(usage.get("cache_read_input_tokens"))
    prompt = _count(usage.get("input_tokens")) + cache_write + cache_read
    completion = _count(usage.get("output_tokens"))
    out: JSONObject = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }
    details = usage.get("output_tokens_details")
    if isinstance(details, dict) and _is_count(details.get("thinking_tokens")):
        out["completion_tokens_details"] = {"reasoning_tokens": details["thinking_tokens"]}
    return out


def translate_response(raw: bytes, meta: StreamMeta) -> JSONObject:
    """A non-streaming Messages API body -> a `chat.completion` object (MAPPING.md B).

    Raises:
        UpstreamProtocolError: the body is not a Messages API message.
        UpstreamStatusError: the body is an Anthropic error object (despite a 2xx status).
    """
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise UpstreamProtocolError("upstream answered with a body that is not JSON") from exc
    if not isinstance(body, dict):
        raise UpstreamProtocolError("upstream answered with JSON that is not an object")
    if body.get("type") == "error":
        raise error_from_event(body)
    content = body.get("content")
    if not isinstance(content, list):
        raise UpstreamProtocolError("upstream message has no content array")

    texts: list[str] = []
    json_answer = False  # JSON mode's tool was called: its input is the content
    reasoning: list[str] = []
    thinking_blocks: list[JSONObject] = []
    tool_calls: list[JSONObject] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(_string(block, "text"))
        elif kind == "thinking":
            # P-B2: reasoning_content joins thinking blocks with a blank line; the blocks
            # themselves (with their signatures) go to thinking_blocks for replay (B.3).
            thinking = _string(block, "thinking")
            signature = block.get("signature")
            reasoning.append(thinking)
            thinking_blocks.append(
                {
                    "type": "thinking",
                    "thinking": thinking,
                    "signature": signature if isinstance(signature, str) else "",
                }
            )
        elif kind == "redacted_thinking":
            thinking_blocks.append({"type": "redacted_thinking", "data": _string(block, "data")})
        elif kind == "tool_use":
            tool_input = block.get("input")
            if not isinstance(tool_input, dict):
                raise UpstreamProtocolError("upstream tool_use block has no input object")
            if block.get("name") == JSON_TOOL:
                # JSON mode, json_mode = tool: the forced call's input is the answer.
                texts.append(json.dumps(tool_input, ensure_ascii=False))
                json_answer = True
                continue
            tool_calls.append(
                {
                    "id": _string(block, "id"),
                    "type": "function",
                    "function": {
                        "name": _string(block, "name"),
                        "arguments": json.dumps(
                            tool_input, ensure_ascii=False, separators=(",", ":")
                        ),
                    },
                }
            )
        # P-B3: server_tool_use, web_search_tool_result and other server-side blocks are not
        # calls the client could execute; they, and block types added later, are dropped.

    stop_reason = body.get("stop_reason")
    if (json_answer or meta.json_object) and not tool_calls:
        # A turn that calls the client's tools is not the answer yet: only answers are checked.
        check_json_object("".join(texts), stop_reason)
        if stop_reason == "tool_use":
            stop_reason = "end_turn"  # the call was the answer, not a call for the client
    message: JSONObject = {
        "role": "assistant",
        # B: null when there is no text but there are tool calls, else "" at least.
        "content": "".join(texts) if texts or not tool_calls else None,
        "refusal": None,
        "annotations": [],
    }
    if reasoning:
        message["reasoning_content"] = "\n\n".join(reasoning)
    if thinking_blocks:
        message["thinking_blocks"] = thinking_blocks
    if tool_calls:
        message["tool_calls"] = tool_calls
    model = body.get("model")
    usage = body.get("usage")
    return {
        "id": meta.completion_id,
        "object": "chat.completion",
        "created": meta.created,
        "model": model if isinstance(model, str) and model else meta.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(stop_reason),
            }
        ],
        "usage": openai_usage(usage if isinstance(usage, dict) else {}),
    }


def error_from_event(payload: JSONObject) -> UpstreamStatusError:
    """The error for an Anthropic `error` object that came with HTTP 200 (C.2, H.6).

    The status the client gets follows the error type (`overloaded_error` is 529 [S11]); the
    upstream status stays 200.
    """
    error = payload.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    kind = kind if isinstance(kind, str) and kind else "api_error"
    status = ERROR_TYPE_STATUS.get(kind, _UNKNOWN_ERROR_STATUS)
    return UpstreamStatusError(
        scrub(message) if isinstance(message, str) and message else "upstream reported an error",
        upstream_status=200,
        status=status,
        error_type=kind,
        code="rate_limit_exceeded" if status == 429 else None,
    )


def error_from_body(
    status: int, headers: tuple[tuple[str, str], ...], raw: bytes
) -> UpstreamStatusError:
    """The error for a non-2xx Anthropic answer (MAPPING.md F.1, P-F1).

    Same status (529 stays 529; a status below 400 here means a 2xx answer the caller could not
    use and becomes 502), the upstream's message and type, code `rate_limit_exceeded` for 429,
    and the retry / request-id headers. A body that is not Anthropic's error shape (a proxy's
    HTML page, an empty body) gives "upstream answered HTTP <status>" and a scrubbed excerpt.
    """
    client_status = status if status >= 400 else 502
    message, kind = _anthropic_error(raw)
    if message is None:
        message = f"upstream answered HTTP {status}"
        excerpt = _excerpt(raw)
        if excerpt:
            message += f": {excerpt}"
    if kind is None:
        kind = _TYPE_OF_STATUS.get(client_status, "api_error")
    forwarded = []
    for name, value in headers:
        target = _FORWARDED_HEADERS.get(name.lower())
        if target is not None:
            forwarded.append((target, value))
    return UpstreamStatusError(
        message,
        upstream_status=status,
        status=client_status,
        error_type=kind,
        code="rate_limit_exceeded" if client_status == 429 else None,
        headers=tuple(forwarded),
    )


def scrub(text: str) -> str:
    """`text` with anything that looks like an API key or bearer token replaced."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _anthropic_error(raw: bytes) -> tuple[str | None, str | None]:
    # {"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...} [S7]
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None, None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return None, None
    kind = error.get("type")
    return scrub(error["message"]), (kind if isinstance(kind, str) and kind else None)


def _excerpt(raw: bytes) -> str:
    text = raw[: _SCRUB_WINDOW * 4].decode("utf-8", "replace")[:_SCRUB_WINDOW]
    text = scrub(_CONTROL.sub(" ", text)).strip()
    if len(text) > _EXCERPT_CHARS:
        text = text[: _EXCERPT_CHARS - 1] + "…"
    return text


def _string(block: JSONObject, key: str) -> str:
    value = block.get(key)
    if not isinstance(value, str):
        raise UpstreamProtocolError(f"upstream {block.get('type')} block has no string {key}")
    return value


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _count(value: Any) -> int:
    # Missing and null counters are 0 ("?? 0" in B.2); so is anything that is not a count.
    return value if _is_count(value) else 0
