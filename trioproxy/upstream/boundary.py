"""Where trio, h11 and ssl exceptions become trioproxy's `Upstream*` errors, and nowhere else.

Stage: the IO edge, wrapped around every await of the upstream client (connect, send, receive).
Invariants:
- Messages name the origin (`scheme://host:port`) and what failed; they never quote a header
  value, a URL path or query, or bytes the upstream sent (h11 puts raw lines in its messages;
  those are cut off), so no key can leak through an error.
- `ClosedResourceError` is not translated: using a stream we closed is our bug.
"""

from __future__ import annotations

import contextlib
import re
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

import h11
import trio

from trioproxy.errors import UpstreamConnectionError, UpstreamProtocolError, UpstreamTimeout

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["Limit", "TimedOut", "upstream_errors"]

# Where h11 starts quoting received bytes: `b'...'` or `bytearray(b'...')`.
_QUOTED_BYTES = re.compile(r"[:\s]*(?:bytearray\()?b['\"]")
# What each kind of timeout was waiting for, for the message.
_WAITING_FOR = {
    "connect": "could not connect",
    "first byte": "no response head",
    "read": "no data",
    "total": "the exchange did not finish",
}


@dataclass(frozen=True, slots=True)
class Limit:
    """A deadline on `trio.current_time()`'s clock, and which timeout it comes from."""

    at: float
    which: str  # "connect" | "first byte" | "read" | "total"
    seconds: float


class TimedOut(trio.TooSlowError):
    """A receive (or connect, or send) hit its `Limit`. Raised instead of a bare TooSlowError so
    `upstream_errors` can say which timeout it was."""

    def __init__(self, limit: Limit) -> None:
        super().__init__(limit.which)
        self.limit = limit


@contextlib.contextmanager
def upstream_errors(origin: str) -> Iterator[None]:
    """Translate the exceptions of one upstream IO step into the `UpstreamError` family."""
    try:
        yield
    except trio.TooSlowError as exc:
        raise UpstreamTimeout(_timeout_message(origin, exc)) from exc
    except trio.BrokenResourceError as exc:
        # SocketStream and SSLStream wrap the OSError / SSLError that broke them.
        raise UpstreamConnectionError(_connection_message(origin, exc.__cause__)) from exc
    except OSError as exc:  # ssl.SSLError is an OSError too
        raise UpstreamConnectionError(_connection_message(origin, exc)) from exc
    except h11.RemoteProtocolError as exc:
        raise UpstreamProtocolError(f"{origin}: invalid HTTP response: {_h11_reason(exc)}") from exc


def _timeout_message(origin: str, exc: trio.TooSlowError) -> str:
    if not isinstance(exc, TimedOut):
        return f"{origin}: timed out"
    limit = exc.limit
    what = _WAITING_FOR.get(limit.which, "timed out")
    return f"{origin}: {what} within the {limit.which} timeout ({limit.seconds:g} s)"


def _connection_message(origin: str, cause: BaseException | None) -> str:
    if isinstance(cause, ssl.SSLCertVerificationError):
        detail = cause.verify_message or cause.reason or "untrusted certificate"
        return f"{origin}: TLS certificate verification failed: {detail}"
    if isinstance(cause, ssl.SSLError):
        return f"{origin}: TLS error: {cause.reason or type(cause).__name__}"
    if isinstance(cause, OSError):
        return f"{origin}: connection failed: {cause.strerror or type(cause).__name__}"
    return f"{origin}: connection lost"


def _h11_reason(exc: h11.RemoteProtocolError) -> str:
    # h11 formats the offending bytes into some messages ("illegal header line: b'...'").
    # Keep the reason, drop the bytes: they may be a header value.
    message = str(exc)
    kept = _QUOTED_BYTES.split(message, maxsplit=1)[0]
    return message if kept == message else kept + " (content withheld)"
