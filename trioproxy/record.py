"""What one request did: its record, its one outcome, and the metrics sample made from it.

Stage: bookkeeping shared by the pump and the engine (pure: no clock is read here; times are
`trio.current_time()` values the edge passes in).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from trioproxy.errors import ClientError, ProxyError, ServerShutdown, UpstreamTimeout
from trioproxy.metrics import RequestSample

__all__ = ["Outcome", "RequestRecord", "request_sample"]


class Outcome(enum.Enum):
    """How a request ended: exactly one per request, for logs and metrics."""

    COMPLETED = "completed"
    CLIENT_CANCELLED = "client_cancelled"
    UPSTREAM_ERROR = "upstream_error"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"
    REJECTED = "rejected"  # a client fault: bad request, bad key, unknown model, over a limit


@dataclass(slots=True)
class RequestRecord:
    """What one request did; filled in as it goes, logged and counted when it ends."""

    request_id: str
    started: float  # trio.current_time()
    key_name: str = "-"
    model: str = "-"
    upstream: str = "-"
    # The label of the upstream key the last attempt used (never the key); "-" when none did.
    upstream_key: str = "-"
    stream: bool = False
    status: int = 0
    outcome: Outcome | None = None
    error_code: str | None = None
    first_byte: float | None = None  # trio.current_time() of the first chunk
    ended: float | None = None
    retries: int = 0
    relayed: bool = False  # the upstream spoke the client's dialect: its answer went unchanged
    usage: dict[str, Any] | None = None
    # Stream chunks (or relayed events) sent to the client: about one token each, the estimate of
    # the output for a key's `tpm` when the stream ended before its usage (pump.py).
    chunks: int = 0
    attempts: list[str] = field(default_factory=list)  # "anthropic:529", for the access log
    # The id the upstream gave its answer (Anthropic's `request-id`, OpenAI's `x-request-id`),
    # from the last upstream response, success or error: the face sends it as
    # `x-upstream-request-id` and the access log prints it beside `request_id`.
    upstream_request_id: str | None = None
    # (upstream, reason) of every retry and every give-up, in order; for logs and metrics. A
    # give-up is an upstream the engine stopped trying for this request (reasons in
    # `engine.GiveUp`); a retry's reason is the failure retried ("529", "upstream_timeout").
    retry_reasons: list[tuple[str, str]] = field(default_factory=list)
    giveups: list[tuple[str, str]] = field(default_factory=list)
    # The client's request headers (lower-case), for upstreams' `forward_headers`; never logged.
    client_headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def fail(self, exc: ProxyError) -> None:
        """Record how `exc` ended the request: the one outcome classification for every face."""
        self.error_code = exc.code
        if isinstance(exc, ClientError):
            self.outcome = Outcome.REJECTED
        elif isinstance(exc, UpstreamTimeout):
            self.outcome = Outcome.TIMEOUT
        elif isinstance(exc, ServerShutdown):
            self.outcome = Outcome.SHUTDOWN
        else:
            self.outcome = Outcome.UPSTREAM_ERROR


def request_sample(record: RequestRecord) -> RequestSample:
    """The metrics sample of a finished request (`record.ended` and `record.outcome` set)."""
    assert record.outcome is not None
    assert record.ended is not None
    usage = record.usage or {}
    return RequestSample(
        model=record.model,
        upstream=record.upstream,
        key=record.key_name,
        outcome=record.outcome.value,
        status=record.status,
        stream=record.stream,
        ttfb=None if record.first_byte is None else record.first_byte - record.started,
        duration=record.ended - record.started,
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        retries=record.retries,
        error_code=record.error_code,
        retry_reasons=tuple(record.retry_reasons),
        giveups=tuple(record.giveups),
    )
