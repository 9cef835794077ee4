"""Every error trioproxy raises on purpose.

Stage: all of them. The pure core raises these; the IO edge translates trio / h11 exceptions into
them at its boundary (and nowhere else); the faces (SSE, WebSocket, in-process) render them with
`framing.error_body`. Anything that is not a `ProxyError` is a bug and is answered with a 500 by
the single top-level handler in `asgi`.

Client faults and upstream faults are separate branches (after h11's Local/Remote split and
httpcore's timeout / network / protocol split). Each class knows how the edge should answer: an
HTTP status and an OpenAI error `type`; instances may override both, and carry `param`, `code` and
response headers (e.g. `retry-after`) for the OpenAI envelope
`{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AuthError",
    "ClientError",
    "ConfigError",
    "PermissionDenied",
    "ProxyError",
    "RateLimited",
    "RequestTooLarge",
    "ServerShutdown",
    "UnknownModel",
    "UntranslatableRequest",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class ProxyError(Exception):
    """Base for every error trioproxy raises on purpose; anything else is a bug.

    Args:
        message: what happened and, for client faults, what to fix. Never holds a secret.
        param: the request field at fault (`messages[2].content`), or None.
        code: a machine-readable code (`model_not_found`), or None for the class default.
        error_type: overrides the class's OpenAI error `type`.
        status: overrides the class's HTTP status.
        headers: response headers to send with the error (lower-case names), e.g. `retry-after`.
    """

    status_hint: ClassVar[int] = 500
    error_type_hint: ClassVar[str] = "api_error"
    code_hint: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        error_type: str | None = None,
        status: int | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.code_hint
        self.error_type = error_type if error_type is not None else self.error_type_hint
        self.status = status if status is not None else self.status_hint
        self.headers = headers

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status}, code={self.code!r})"


class ConfigError(ProxyError):
    """proxy.ini is wrong (at start-up or on reload); the message names section, key and line."""

    code_hint = "config_error"


# --- client faults ---------------------------------------------------------------------------


class ClientError(ProxyError):
    """The request is wrong; the message says what to fix. Never reaches an upstream."""

    status_hint = 400
    error_type_hint = "invalid_request_error"


class AuthError(ClientError):
    status_hint = 401
    error_type_hint = "authentication_error"
    code_hint = "invalid_api_key"


class PermissionDenied(ClientError):
    status_hint = 403
    error_type_hint = "permission_error"
    code_hint = "model_not_allowed"


class UnknownModel(ClientError):
    status_hint = 404
    error_type_hint = "not_found_error"
    code_hint = "model_not_found"


class RequestTooLarge(ClientError):
    status_hint = 413
    code_hint = "request_too_large"


class RateLimited(ClientError):
    status_hint = 429
    error_type_hint = "rate_limit_error"
    code_hint = "rate_limit_exceeded"


class UntranslatableRequest(ClientError):
    """A feature with no equivalent upstream (e.g. `n > 1` for Anthropic)."""

    code_hint = "unsupported_parameter"


# --- upstream faults -------------------------------------------------------------------------


class UpstreamError(ProxyError):
    status_hint = 502
    error_type_hint = "api_error"
    code_hint: ClassVar[str | None] = "upstream_error"

    @property
    def retryable(self) -> bool:
        """Whether trying again (or the next upstream) may succeed, before the first byte."""
        return False


class UpstreamUnavailable(UpstreamError):
    """The upstream is disabled (e.g. its key resolved empty) or every upstream was tried."""

    status_hint = 503
    code_hint = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status_hint = 504
    code_hint = "upstream_timeout"

    @property
    def retryable(self) -> bool:
        return True


class UpstreamConnectionError(UpstreamError):
    code_hint = "upstream_connection_error"

    @property
    def retryable(self) -> bool:
        return True


class UpstreamProtocolError(UpstreamError):
    """Bad HTTP, bad SSE, bad JSON or a truncated stream from upstream."""

    code_hint = "upstream_protocol_error"


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error: a non-2xx status, or an error event mid-stream.

    `status` is what the client gets (upstream 4xx/429/5xx keep theirs, MAPPING.md F.1);
    `upstream_status` is what the upstream said (200 for an error event after the stream began).
    """

    code_hint = None

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        param: str | None = None,
        code: str | None = None,
        error_type: str | None = None,
        status: int | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(
            message,
            param=param,
            code=code,
            error_type=error_type,
            status=status if status is not None else upstream_status,
            headers=headers,
        )
        self.upstream_status = upstream_status

    @property
    def retryable(self) -> bool:
        # 408/409/429 and every 5xx (529 included) are worth another try, as the OpenAI and
        # Anthropic SDKs judge it (CLIENT_EXPECTATIONS.md §1.4, §3.6).
        return self.status in (408, 409, 429) or self.status >= 500

    @property
    def retry_after(self) -> float | None:
        """Seconds the upstream asked us to wait (`retry-after-ms`, then `retry-after`), if any."""
        found = dict(self.headers)
        try:
            if "retry-after-ms" in found:
                return max(0.0, float(found["retry-after-ms"]) / 1000)
            if "retry-after" in found:
                return max(0.0, float(found["retry-after"]))
        except ValueError:
            return None  # an HTTP-date: rare from these APIs; fall back to our own backoff
        return None


class ServerShutdown(ProxyError):
    """The daemon is shutting down and the drain deadline passed."""

    status_hint = 503
    error_type_hint = "api_error"
    code_hint = "server_shutdown"
