"""OpenAI Responses answers -> Chat shapes: bodies, usage, finish reasons, failures (MAPPING.md E).

Stage: translate (pure). Used by `ResponsesDialect.translate_response` (a non-streaming body) and
by the stream translator (`responses_stream`) for the tables they share: E's usage mapping,
`status` / `incomplete_details` -> `finish_reason`, and the error a failed response becomes.

Invariants:
- Upstream faults surface as `UpstreamProtocolError` (a body that is not a Responses object) or
  `UpstreamStatusError` (a failed response, P-E1); nothing else escapes.
- Usage counters are copied, never recomputed from each other, except `total_tokens` when the
  upstream left it out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trioproxy.errors import UpstreamProtocolError
from trioproxy.translate.openai_common import error_from_object, error_in_success, load_body_json

if TYPE_CHECKING:
    from trioproxy.errors import UpstreamStatusError
    from trioproxy.translate.base import JSONObject, StreamMeta

__all__ = [
    "chat_logprobs",
    "failed_error",
    "incomplete_finish_reason",
    "openai_usage",
    "translate_response",
]

# P-E1: a failed response is a server error unless its code says otherwise (openai_common).
_FAILED_STATUS = 500


def openai_usage(usage: Any) -> JSONObject:
    """A Chat `usage` object from a Responses `usage` (MAPPING.md E, tables/usage.json).

    prompt_tokens = input_tokens (Responses already counts cached tokens in it, as Chat does);
    completion_tokens = output_tokens (reasoning included); cached_tokens and reasoning_tokens
    from the details, `reasoning_tokens` only when reported; `cache_write_tokens` (in newer
    ResponseUsage and CompletionUsage types [S3, S4]) only when reported.
    """
    usage = usage if isinstance(usage, dict) else {}
    prompt = _count(usage.get("input_tokens"))
    completion = _count(usage.get("output_tokens"))
    total = usage.get("total_tokens")
    input_details = usage.get("input_tokens_details")
    input_details = input_details if isinstance(input_details, dict) else {}
    prompt_details: JSONObject = {"cached_tokens": _count(input_details.get("cached_tokens"))}
    if _is_count(input_details.get("cache_write_tokens")):
        prompt_details["cache_write_tokens"] = input_details["cache_write_tokens"]
    out: JSONObject = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total if _is_count(total) else prompt + completion,
        "prompt_tokens_details": prompt_details,
    }
    output_details = usage.get("output_tokens_details")
    if isinstance(output_details, dict) and _is_count(output_details.get("reasoning_tokens")):
        out["completion_tokens_details"] = {"reasoning_tokens": output_details["reasoning_tokens"]}
    return out


def incomplete_finish_reason(response: JSONObject) -> str:
    """`finish_reason` of an incomplete response (E): `content_filter` when that is the reason,
    else `length` (`max_output_tokens`, and reasons added later: the answer was cut short)."""
    details = response.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    return "content_filter" if reason == "content_filter" else "length"


def failed_error(response: JSONObject) -> UpstreamStatusError:
    """The error for a failed response (E `response.failed`, non-streaming P-E1).

    Message, code and (when the upstream recorded it) the original error type come from
    `response.error`; the type is `server_error` otherwise. The status is 500 (P-E1), refined by
    the code where it names something else: `rate_limit_exceeded` 429 (so it is retried like one),
    `invalid_prompt` and the image-input codes 400 (the request's fault: not retried),
    `vector_store_timeout` 504.
    """
    return error_from_object(
        response.get("error"),
        default_type="server_error",
        default_status=_FAILED_STATUS,
        fallback_message="upstream response failed",
    )


def chat_logprobs(entries: Any) -> list[JSONObject]:
    """Responses output_text logprobs -> Chat `logprobs.content` entries (D: logprobs).

    Chat entries also carry each token's UTF-8 `bytes`, which Responses leaves out on deltas;
    they are computed from the token. Malformed entries are skipped.
    """
    out: list[JSONObject] = []
    if not isinstance(entries, list):
        return out
    for entry in entries:
        token = _token_logprob(entry)
        if token is None:
            continue
        tops = entry.get("top_logprobs")
        token["top_logprobs"] = [
            top
            for top in (_token_logprob(t) for t in (tops if isinstance(tops, list) else []))
            if top is not None
        ]
        out.append(token)
    return out


def translate_response(raw: bytes, meta: StreamMeta) -> JSONObject:
    """A non-streaming Responses body -> a `chat.completion` object (MAPPING.md E).

    `output_text` parts of message items are concatenated into `content`, `refusal` parts into
    `refusal`; reasoning items' summary texts (and raw `reasoning_text` parts, from open-weight
    models) are joined with a blank line into `reasoning_content`; `function_call` items become
    `tool_calls` with `id = call_id` (H.17). Other item types (web search calls, ...) are dropped.

    Raises:
        UpstreamProtocolError: the body is not a Responses object.
        UpstreamStatusError: the response failed (P-E1), or the body is an error envelope.
    """
    body = load_body_json(raw)
    status = body.get("status")
    if status == "failed":
        raise failed_error(body)
    output = body.get("output")
    if not isinstance(output, list):
        if isinstance(body.get("error"), dict):  # an error envelope despite a 2xx status
            raise error_in_success(body["error"])
        raise UpstreamProtocolError("upstream response has no output array")
    if status not in (None, "completed", "incomplete"):
        # in_progress / queued (background mode, never asked for) or cancelled.
        raise UpstreamProtocolError(f"upstream response has status {status!r}, not completed")

    texts: list[str] = []
    refusals: list[str] = []
    reasoning: list[str] = []
    logprobs: list[JSONObject] = []
    tool_calls: list[JSONObject] = []
    for item in output:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            for part in _list(item.get("content")):
                part_type = part.get("type") if isinstance(part, dict) else None
                if part_type == "output_text":
                    texts.append(_string(part, "text"))
                    logprobs += chat_logprobs(part.get("logprobs"))
                elif part_type == "refusal":
                    refusals.append(_string(part, "refusal"))
        elif kind == "reasoning":
            for key, part_type in (("summary", "summary_text"), ("content", "reasoning_text")):
                for part in _list(item.get(key)):
                    if isinstance(part, dict) and part.get("type") == part_type:
                        reasoning.append(_string(part, "text"))
        elif kind == "function_call":
            tool_calls.append(
                {
                    "id": _string(item, "call_id"),  # H.17: call_id, not the fc_ item id
                    "type": "function",
                    "function": {
                        "name": _string(item, "name"),
                        "arguments": _string(item, "arguments"),
                    },
                }
            )
        # Hosted tool calls (web_search_call, file_search_call, mcp_*, ...) are not calls the
        # client could execute; they, and item types added later, are dropped.

    message: JSONObject = {
        "role": "assistant",
        # As for Anthropic (B): null when there is no text but there are tool calls.
        "content": "".join(texts) if texts or not tool_calls else None,
        "refusal": "".join(refusals) if refusals else None,
        "annotations": [],
    }
    if reasoning:
        message["reasoning_content"] = "\n\n".join(reasoning)  # E, P-RS1
    if tool_calls:
        message["tool_calls"] = tool_calls
    if status == "incomplete":
        finish = incomplete_finish_reason(body)
    else:
        finish = "tool_calls" if tool_calls else "stop"
    model = body.get("model")
    completion: JSONObject = {
        "id": meta.completion_id,
        "object": "chat.completion",
        "created": meta.created,
        "model": model if isinstance(model, str) and model else meta.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": {"content": logprobs, "refusal": None} if logprobs else None,
                "finish_reason": finish,
            }
        ],
        "usage": openai_usage(body.get("usage")),
    }
    return completion


def _token_logprob(entry: Any) -> JSONObject | None:
    if not isinstance(entry, dict):
        return None
    token, logprob = entry.get("token"), entry.get("logprob")
    if not isinstance(token, str) or not isinstance(logprob, (int, float)):
        return None
    raw = entry.get("bytes")
    if not (isinstance(raw, list) and all(isinstance(b, int) for b in raw)):
        raw = list(token.encode("utf-8", "surrogatepass"))
    return {"token": token, "logprob": logprob, "bytes": raw}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _string(item: JSONObject, key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise UpstreamProtocolError(f"upstream {item.get('type')} has no string {key}")
    return value


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _count(value: Any) -> int:
    return value if _is_count(value) else 0
