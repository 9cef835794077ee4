"""Upstream health: what one failed (or good) upstream answer does to its key and its upstream.

Stage: routing (pure). No clock, no randomness: `now` is seconds on the pool's clock and
`jitter` a number in [0, 1), both passed in by the engine (the IO edge).

Whose fault (`classify`):
- **the key's**: 429 (rate limited: cool the key down for `retry-after`, else `key_cooldown`
  doubled per 429 in a row up to `key_cooldown_max`, with jitter); quota or billing (OpenAI
  `insufficient_quota`, Anthropic `billing_error` / 402 and its 400 "Your credit balance is too
  low to access the Anthropic API": a long cool-down, `quota_cooldown`); 401 / 403 (the key is
  refused: disabled until the next reload). The request moves to another key of the pool at once.
- **the upstream's**: 5xx, 529 / `overloaded_error`, timeouts, refused or broken connections,
  malformed answers. They count against the upstream's circuit breaker, never a key.
- **neither**: other 4xx (the request's own fault) say the upstream is up.

Circuit breaker, one per upstream (theory of operation):

    CLOSED --`breaker_failures` upstream failures in a row--> OPEN (for `breaker_open` s)
    OPEN --`breaker_open` s passed, one request admitted (the probe)--> HALF_OPEN
    HALF_OPEN --the probe got any answer that is not the upstream's fault--> CLOSED
    HALF_OPEN --the probe failed--> OPEN (for `breaker_open` s again)
    HALF_OPEN --no verdict within `breaker_open` s (the probe was cancelled)--> a new probe

While OPEN (and HALF_OPEN with its probe out) the router skips the upstream, so a dead upstream
costs one probe per `breaker_open` seconds instead of a timeout on every request.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from trioproxy.errors import (
    UpstreamConnectionError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)

if TYPE_CHECKING:
    from trioproxy.config_types import UpstreamConfig
    from trioproxy.errors import ProxyError

__all__ = [
    "Breaker",
    "BreakerState",
    "Failure",
    "HealthPolicy",
    "KeyHealth",
    "KeyState",
    "admit",
    "after_answer",
    "after_key_failure",
    "after_success",
    "blocked_for",
    "classify",
]


class Failure(enum.Enum):
    """Whose fault one failed upstream answer is (a metrics label)."""

    RATE_LIMITED = "rate_limited"  # the key's: 429
    QUOTA = "quota"  # the key's: quota exhausted, billing
    AUTH = "auth"  # the key's: 401 / 403
    UPSTREAM = "upstream"  # the upstream's: 5xx, 529, timeout, connection, bad answer
    OTHER = "other"  # neither (a 4xx about the request itself)


KEY_FAILURES = frozenset({Failure.RATE_LIMITED, Failure.QUOTA, Failure.AUTH})

# Anthropic answers an account without credit with a 400 invalid_request_error whose message
# starts so (seen in anthropics/claude-code issues #4208, #66314; no distinct type or code).
_CREDIT_BALANCE = "credit balance is too low"
_QUOTA_NAMES = frozenset({"insufficient_quota", "billing_error"})


def classify(exc: ProxyError) -> Failure:
    """Whose fault `exc` (an upstream's answer, translated) is; see the module docstring."""
    if isinstance(exc, (UpstreamTimeout, UpstreamConnectionError, UpstreamProtocolError)):
        return Failure.UPSTREAM
    if not isinstance(exc, UpstreamStatusError):
        return Failure.OTHER
    said = exc.upstream_status if exc.upstream_status >= 400 else exc.status
    if (
        exc.code in _QUOTA_NAMES
        or exc.error_type in _QUOTA_NAMES
        or said == 402
        or (said == 400 and _CREDIT_BALANCE in exc.message.lower())
    ):
        return Failure.QUOTA
    if said in (401, 403) or exc.error_type in ("authentication_error", "permission_error"):
        return Failure.AUTH
    if said == 429 or exc.status == 429:
        return Failure.RATE_LIMITED
    if exc.status >= 500:
        return Failure.UPSTREAM
    return Failure.OTHER


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """An upstream's health settings (`[upstream:*]` keys of the same names)."""

    key_cooldown: float = 1.0  # seconds, the first 429 without retry-after
    key_cooldown_max: float = 60.0
    quota_cooldown: float = 3600.0
    breaker_failures: int = 5  # 0: no breaker
    breaker_open: float = 30.0

    @classmethod
    def of(cls, upstream: UpstreamConfig) -> HealthPolicy:
        return cls(
            key_cooldown=upstream.key_cooldown,
            key_cooldown_max=upstream.key_cooldown_max,
            quota_cooldown=upstream.quota_cooldown,
            breaker_failures=upstream.breaker_failures,
            breaker_open=upstream.breaker_open,
        )


# --- keys ------------------------------------------------------------------------------------


class KeyState(enum.Enum):
    READY = "ready"
    COOLING = "cooling"  # rate limited or out of quota, until `KeyHealth.until`
    DISABLED = "disabled"  # refused (401 / 403), until the next reload


@dataclass(frozen=True, slots=True)
class KeyHealth:
    """What the store keeps about one key (by its fingerprint, never the key)."""

    until: float = 0.0  # cooling until this time; math.inf when disabled
    reason: str = ""  # the `Failure` value that cooled or disabled it
    strikes: int = 0  # rate limits in a row (the exponential default grows with it)

    def state(self, now: float) -> KeyState:
        if self.until == math.inf:
            return KeyState.DISABLED
        return KeyState.COOLING if self.until > now else KeyState.READY

    def remaining(self, now: float) -> float:
        """Seconds until the key may be used again (inf when disabled, 0 when ready)."""
        return max(0.0, self.until - now)


def after_key_failure(
    health: KeyHealth,
    failure: Failure,
    *,
    now: float,
    policy: HealthPolicy,
    retry_after: float | None,
    jitter: float,
) -> KeyHealth:
    """The key's health after a failure that is its own (`failure` in KEY_FAILURES)."""
    if failure is Failure.AUTH:
        return KeyHealth(until=math.inf, reason=failure.value, strikes=health.strikes)
    if failure is Failure.QUOTA:
        until = now + max(policy.quota_cooldown, retry_after or 0.0)
        return KeyHealth(until=max(until, health.until), reason=failure.value, strikes=0)
    strikes = health.strikes + 1
    if retry_after is not None:
        delay = retry_after
    else:
        # Exponential, with "equal jitter" (half fixed, half drawn) so that keys and instances
        # cooled together do not come back together:
        # https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/
        ceiling = min(policy.key_cooldown_max, policy.key_cooldown * 2 ** min(strikes - 1, 30))
        delay = ceiling / 2 + ceiling / 2 * jitter
    return KeyHealth(until=max(now + delay, health.until), reason=failure.value, strikes=strikes)


def after_success(health: KeyHealth) -> KeyHealth:
    """A key that answered: its run of rate limits is over (its cool-down, if any, stands)."""
    return health if not health.strikes else replace(health, strikes=0)


# --- the upstream's circuit breaker ----------------------------------------------------------


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Breaker:
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0  # upstream failures in a row
    until: float = 0.0  # OPEN: no request before this; HALF_OPEN: the probe's deadline


def blocked_for(breaker: Breaker, now: float) -> float | None:
    """Seconds until the upstream may get a request, or None if it may now (the router's test;
    it takes no probe slot, `admit` does)."""
    if breaker.state is BreakerState.CLOSED or breaker.until <= now:
        return None
    return breaker.until - now


def admit(breaker: Breaker, *, now: float, policy: HealthPolicy) -> tuple[Breaker, bool]:
    """Whether one request may go to the upstream now, and the breaker after it does. An OPEN
    breaker whose time is up admits this one request as its probe (HALF_OPEN)."""
    if breaker.state is BreakerState.CLOSED:
        return breaker, True
    if breaker.until > now:
        return breaker, False
    return Breaker(BreakerState.HALF_OPEN, breaker.failures, now + policy.breaker_open), True


def after_answer(
    breaker: Breaker, *, upstream_failed: bool, now: float, policy: HealthPolicy
) -> Breaker:
    """The breaker after one answer (`upstream_failed`: the failure was the upstream's)."""
    if not upstream_failed:
        if breaker.state is BreakerState.OPEN:
            return breaker  # an answer to a request sent before it opened: no news
        return Breaker() if breaker != Breaker() else breaker
    if breaker.state is BreakerState.OPEN:
        return breaker
    failures = breaker.failures + 1
    if breaker.state is BreakerState.HALF_OPEN or (
        policy.breaker_failures and failures >= policy.breaker_failures
    ):
        return Breaker(BreakerState.OPEN, failures, now + policy.breaker_open)
    return Breaker(BreakerState.CLOSED, failures, 0.0)
