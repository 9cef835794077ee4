"""What the two OpenAI-shaped dialects share: error pass-through, stream errors, request bodies.

Stage: translate (pure). Used by `responses` (OpenAI Responses upstreams, MAPPING.md D/E) and
`chat` (OpenAI-compatible Chat Completions upstreams, G). Both speak OpenAI's error envelope
`{"error": {"message", "type", "param", "code"}}`, so their errors pass through unchanged
(MAPPING.md F.1: "OpenAI-shaped upstream errors (Responses / chat upstreams) pass through
unchanged"); this module is the one place that reads those envelopes.

Invariants:
- Every function here returns an `UpstreamStatusError` (never raises one, so the caller decides
  where the traceback starts) or raises `UpstreamProtocolError` / `ClientError`; no KeyError,
  TypeError or ValueError escapes, whatever the upstream sent.
- Nothing the upstream sent reaches an error message without `scrub()` (from
  `anthropic_response`, the one implementation of key scrubbing): an error page may quote
  request headers, and keys must never reach a client or a log.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from trioproxy.errors import ClientError, UpstreamProtocolError, UpstreamStatusError
from trioproxy.translate.anthropic_response import scrub

if TYPE_CHECKING:
    from trioproxy.sse import SSEEvent
    from trioproxy.translate.base import JSONObject

__all__ = [
    "FORWARDED_HEADERS",
    "bearer_auth",
    "encode_body",
    "error_from_body",
    "error_from_object",
    "error_in_success",
    "error_status",
    "excerpt",
    "is_blank",
    "is_done_marker",
    "load_body_json",
    "scrub",
]

# F.1: headers worth forwarding, and their names for the client. `retry-after` / `retry-after-ms`
# are honoured by the OpenAI SDKs, `x-should-retry` by the OpenAI and Anthropic SDKs. OpenAI
# sends `x-request-id` itself; some compatible servers send `request-id`. The engine takes the
# request id out before the client sees the error (the client gets one `x-request-id`, the
# proxy's, and the upstream's as `x-upstream-request-id`, issue 17); it is kept here so the
# translated error says everything the upstream said.
FORWARDED_HEADERS: dict[str, str] = {
    "retry-after": "retry-after",
    "retry-after-ms": "retry-after-ms",
    "x-should-retry": "x-should-retry",
    "x-request-id": "x-request-id",
    "request-id": "x-request-id",
}

# The OpenAI error `type` for a bare HTTP status (a body without one); 5xx -> "server_error",
# which is what api.openai.com reports for its own 500s.
_TYPE_OF_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}

# Errors that arrive inside a 200 stream (a chat `{"error": ...}` chunk, a Responses `error`
# event or `response.failed`) have no HTTP status of their own; the status the client gets (and
# whether the engine retries, before the first byte) follows the error's `code`, then its
# `type`. Codes come from openai-python `types/responses/response_error.py` [S4] and the
# OpenAI error codes guide; types from OpenAI's and, because compatible gateways (LiteLLM,
# OpenRouter) relay them, Anthropic's lists [S7 shared/error_type.py].
_CODE_STATUS: dict[str, int] = {
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "server_error": 500,
    "vector_store_timeout": 504,
    "context_length_exceeded": 400,
    # The request's own content was refused or unusable: a client fault, not worth a retry.
    "invalid_prompt": 400,
    "bio_policy": 400,
    "misalignment_policy_violation": 400,
    "data_residency_mismatch": 400,
    "invalid_image": 400,
    "invalid_image_format": 400,
    "invalid_base64_image": 400,
    "invalid_image_url": 400,
    "image_too_large": 400,
    "image_too_small": 400,
    "image_parse_error": 400,
    "image_content_policy_violation": 400,
    "invalid_image_mode": 400,
    "image_file_too_large": 400,
    "unsupported_image_media_type": 400,
    "empty_image_file": 400,
    "failed_to_download_image": 400,
    "image_file_not_found": 400,
}
_TYPE_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "tokens": 429,  # OpenAI's type for a token-per-minute 429
    "requests": 429,  # ... and for a request-per-minute 429
    "insufficient_quota": 429,
    "server_error": 500,
    "api_error": 500,
    "overloaded_error": 529,  # Anthropic's, relayed by gateways; stays >= 500 (F.1)
    "timeout_error": 504,
}

_EXCERPT_CHARS = 200  # of a non-OpenAI error body quoted in the message
_SCRUB_WINDOW = 4 * _EXCERPT_CHARS  # scrubbed before cutting, so a cut key is still caught
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def bearer_auth(api_key: str) -> tuple[tuple[str, str], ...]:
    """`Authorization: Bearer <key>`, as every OpenAI-style API takes its key."""
    return (("authorization", f"Bearer {api_key}"),)


def encode_body(body: JSONObject) -> bytes:
    """The upstream request body as compact UTF-8 JSON.

    Raises:
        ClientError: the body holds something JSON cannot carry. Validation rules these out for
            client bodies (BRIEF); this keeps an embedder's odd dict from becoming a 500.
    """
    try:
        # allow_nan=False: Python's json accepts NaN / Infinity, JSON does not.
        text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate from a "\\ud800" escape
        raise ClientError(
            "the request contains text that is not valid Unicode (a lone surrogate)"
        ) from exc
    except (ValueError, TypeError) as exc:
        raise ClientError(
            "the request contains a value JSON cannot carry (NaN, Infinity, a non-JSON type)"
        ) from exc
    except RecursionError as exc:
        raise ClientError("the request is nested too deeply") from exc


def load_body_json(raw: bytes) -> JSONObject:
    """A non-streaming upstream body as a JSON object; `UpstreamProtocolError` otherwise."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise UpstreamProtocolError("upstream answered with a body that is not JSON") from exc
    if not isinstance(body, dict):
        raise UpstreamProtocolError("upstream answered with JSON that is not an object")
    return body


def is_done_marker(event: SSEEvent) -> bool:
    """The `data: [DONE]` sentinel that ends OpenAI chat streams (and some Responses streams,
    H.18). Matched as a prefix after whitespace, as openai-python does (`startswith("[DONE]")`,
    CLIENT_EXPECTATIONS §1.2)."""
    return event.data.lstrip().startswith("[DONE]")


def is_blank(event: SSEEvent) -> bool:
    """An event whose data is empty or whitespace (`data:` alone): no payload, nothing to parse.

    Tolerated rather than rejected: it carries nothing, and a few servers send it as a heartbeat.
    """
    return not event.data.strip()


def error_status(error_type: Any, code: Any, *, default: int) -> int:
    """The HTTP status for an error reported inside a 200 stream (see `_CODE_STATUS`).

    An integer `code` that is an HTTP error status is taken as one (OpenRouter and vLLM put the
    status there); then the code's row; then the type's; else `default`.
    """
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    if isinstance(code, str) and code in _CODE_STATUS:
        return _CODE_STATUS[code]
    if isinstance(error_type, str) and error_type in _TYPE_STATUS:
        return _TYPE_STATUS[error_type]
    return default


def error_from_object(
    error: Any,
    *,
    default_type: str = "server_error",
    default_status: int = 502,
    fallback_message: str = "upstream reported an error",
) -> UpstreamStatusError:
    """The error for an error object that arrived with HTTP 200 (a stream's error chunk or
    event, a failed response): OpenAI's `{"message", "type", "param", "code"}`, or a bare
    message string.

    The upstream's message (scrubbed), type, param and code are kept, so the client sees what
    it would have seen from the upstream directly (F.2, G: "Upstream mid-stream {"error": ...}
    chunks are forwarded unchanged"); `upstream_status` is 200 and `status` follows
    `error_status()`, defaulting to `default_status`.
    """
    if isinstance(error, str):
        error = {"message": error}
    if not isinstance(error, dict):
        error = {}
    message = error.get("message")
    kind, code, param = error.get("type"), error.get("code"), error.get("param")
    return UpstreamStatusError(
        scrub(message) if isinstance(message, str) and message else fallback_message,
        upstream_status=200,
        status=error_status(kind, code, default=default_status),
        error_type=kind if isinstance(kind, str) and kind else default_type,
        code=_code(code),
        param=param if isinstance(param, str) else None,
    )


def error_in_success(error: Any) -> UpstreamStatusError:
    """The error for a 2xx body that carries `{"error": ...}` instead of an answer (issue 17).

    The upstream's message, type, param and code reach the client. The status is the one the
    error object names (`error_status`: 429 for `insufficient_quota`, 400 for
    `context_length_exceeded`, an integer code such as 503) and 502 when it names none or
    names 500: the upstream broke HTTP's contract, and docs/errors.md keeps 500 for
    trioproxy's own bugs. Streaming and non-streaming requests get the same answer.
    """
    exc = error_from_object(error)
    if exc.status == 500:
        exc.status = 502
    return exc


def error_from_body(
    status: int, headers: tuple[tuple[str, str], ...], raw: bytes
) -> UpstreamStatusError:
    """The error for a non-2xx answer from an OpenAI-style upstream (MAPPING.md F.1).

    OpenAI's envelope passes through unchanged: same status, message, type, param and code. The
    shapes compatible servers use instead are read too: `{"error": "text"}`, a top-level
    `{"message", "type", "code"}` (vLLM) and a one-element list around an envelope (Google's
    OpenAI-compatible endpoint). Anything else gives "upstream answered HTTP <status>" with a
    short excerpt of the body, scrubbed of anything that looks like a key. A status below 400
    (a 2xx the caller could not use, e.g. JSON where a stream was asked for, H.5) is read as
    `error_in_success` reads it, or, when the body is no error envelope either, becomes 502
    `upstream_protocol_error`.
    `retry-after`, `retry-after-ms`, `x-should-retry` and the request id are forwarded.
    """
    client_status = status if status >= 400 else 502
    error = _envelope(raw)
    if error is not None and status < 400:  # an error envelope with a success status
        success = error_in_success(error)
        success.upstream_status = status
        success.headers = _forwarded(headers)
        return success
    default_type = _TYPE_OF_STATUS.get(
        client_status, "server_error" if client_status >= 500 else "invalid_request_error"
    )
    forwarded = _forwarded(headers)
    if error is None:
        message = f"upstream answered HTTP {status}"
        if text := excerpt(raw):
            message += f": {text}"
        code = "rate_limit_exceeded" if client_status == 429 else None
        if status < 400:  # a success status with a body that is neither answer nor error
            code = "upstream_protocol_error"
        return UpstreamStatusError(
            message,
            upstream_status=status,
            status=client_status,
            error_type=default_type,
            code=code,
            headers=forwarded,
        )
    kind, param = error.get("type"), error.get("param")
    return UpstreamStatusError(
        scrub(error["message"]),
        upstream_status=status,
        status=client_status,
        error_type=kind if isinstance(kind, str) and kind else default_type,
        code=_code(error.get("code")),
        param=param if isinstance(param, str) else None,
        headers=forwarded,
    )


def _forwarded(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (FORWARDED_HEADERS[name.lower()], value)
        for name, value in headers
        if name.lower() in FORWARDED_HEADERS
    )


def excerpt(raw: bytes) -> str:
    """The start of an upstream body, on one line, scrubbed, at most `_EXCERPT_CHARS` long."""
    text = raw[: _SCRUB_WINDOW * 4].decode("utf-8", "replace")[:_SCRUB_WINDOW]
    text = scrub(_CONTROL.sub(" ", text)).strip()
    if len(text) > _EXCERPT_CHARS:
        text = text[: _EXCERPT_CHARS - 1] + "…"
    return text


def _envelope(raw: bytes) -> JSONObject | None:
    # The error object of an OpenAI-style error body (with a str message), or None.
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if isinstance(body, list) and body:
        body = body[0]
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, str) and error:
        return {"message": error}
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error
    if error is None and isinstance(body.get("message"), str):
        return body
    return None


def _code(code: Any) -> str | None:
    # OpenAI codes are strings; some compatible servers send the HTTP status as a number.
    if isinstance(code, str) and code:
        return code
    if isinstance(code, int) and not isinstance(code, bool):
        return str(code)
    return None
