"""Per-key limits: requests per minute, tokens per minute (token buckets) and requests in flight.

Stage: the pump, before a request runs (`acquire`) and after it ends (`release`, `debit`). Pure:
the caller passes the clock reading.

A key with `rpm = R` holds a bucket of R tokens that refills at R per minute; each request takes
one. A key with `max_concurrent = C` may have C requests in flight. A key with `tpm = T` holds a
bucket of T model tokens that refills at T per minute; a request is admitted while the bucket is
above zero, and the tokens it used (prompt + completion, known only when it ends) are taken
afterwards (`debit`), so the bucket may go below zero: the next requests then wait until it has
refilled. Over any limit the request gets 429 `rate_limit_exceeded` with `retry-after` (seconds,
rounded up), which the OpenAI and Anthropic SDKs honour before their automatic retry
(CLIENT_EXPECTATIONS.md §1.4).

With a shared store (`[proxy] store = redis://...`, trioproxy/store/) the same two limits are kept
in Redis for every instance at once; this limiter is then the fallback while the store is
unavailable, and it still counts every request in flight on this instance (`track`), so a
fallback starts from what this instance is really running; its token buckets are debited with
this instance's usage either way. The store builds its 429s with `concurrency_limited`,
`rate_limited` and `tokens_limited`, so a client sees the same answer from either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trioproxy.errors import RateLimited

if TYPE_CHECKING:
    from collections.abc import Mapping

    from trioproxy.config_types import ClientKey

__all__ = ["KeyLimiter", "concurrency_limited", "rate_limited", "tokens_limited", "tokens_used"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float  # clock reading, seconds


class KeyLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._token_buckets: dict[str, _Bucket] = {}
        self._in_flight: dict[str, int] = {}

    def in_flight(self, key: ClientKey) -> int:
        return self._in_flight.get(key.name, 0)

    def acquire(self, key: ClientKey, now: float) -> None:
        """Admit one request for `key` or raise `RateLimited`; pair with `release`."""
        if key.max_concurrent is not None and self.in_flight(key) >= key.max_concurrent:
            raise concurrency_limited(key)
        if key.tpm is not None:  # checked before the request bucket, which a refusal must not spend
            tokens = self._refill_tokens(key, now)
            if tokens.tokens <= 0.0:
                raise tokens_limited(key, -tokens.tokens / (key.tpm / 60.0))
        if key.rpm is not None:
            per_second = key.rpm / 60.0
            bucket = self._buckets.setdefault(key.name, _Bucket(tokens=key.rpm, updated=now))
            bucket.tokens = min(key.rpm, bucket.tokens + (now - bucket.updated) * per_second)
            bucket.updated = now
            if bucket.tokens < 1.0:
                raise rate_limited(key, (1.0 - bucket.tokens) / per_second)
            bucket.tokens -= 1.0
        self._in_flight[key.name] = self.in_flight(key) + 1

    def debit(self, key: ClientKey, tokens: int, now: float) -> None:
        """Take the `tokens` a request of `key` used from its token bucket (no-op without
        `tpm`). The bucket may go below zero; `acquire` refuses until it is above again."""
        if key.tpm is None or tokens <= 0:
            return
        self._refill_tokens(key, now).tokens -= tokens

    def _refill_tokens(self, key: ClientKey, now: float) -> _Bucket:
        assert key.tpm is not None
        bucket = self._token_buckets.setdefault(key.name, _Bucket(tokens=key.tpm, updated=now))
        bucket.tokens = min(key.tpm, bucket.tokens + (now - bucket.updated) * key.tpm / 60.0)
        bucket.updated = now
        return bucket

    def track(self, key: ClientKey) -> None:
        """Count one request in flight that another limiter (the shared store) admitted; pair
        with `release`. No check: the store's answer stands."""
        self._in_flight[key.name] = self.in_flight(key) + 1

    def release(self, key: ClientKey) -> None:
        left = self.in_flight(key) - 1
        if left > 0:
            self._in_flight[key.name] = left
        else:
            self._in_flight.pop(key.name, None)


def concurrency_limited(key: ClientKey) -> RateLimited:
    """The 429 for a key at its `max_concurrent`. One second: a chat request rarely ends sooner,
    and the SDKs wait exactly what `retry-after` says."""
    return RateLimited(
        f"too many requests in flight for this key (max_concurrent = "
        f"{key.max_concurrent}); wait for one to finish",
        headers=(("retry-after", "1"),),
    )


def rate_limited(key: ClientKey, wait: float) -> RateLimited:
    """The 429 for a key whose request bucket is empty; `wait` in seconds until a token."""
    seconds = max(1, math.ceil(wait))
    return RateLimited(
        f"rate limit of {key.rpm:g} requests per minute reached for this key; retry in {seconds}s",
        headers=(("retry-after", str(seconds)),),
    )


def tokens_limited(key: ClientKey, wait: float) -> RateLimited:
    """The 429 for a key whose token bucket is spent; `wait` in seconds until it is above zero."""
    seconds = max(1, math.ceil(wait))
    return RateLimited(
        f"token rate limit of {key.tpm} tokens per minute reached for this key; retry in "
        f"{seconds}s",
        headers=(("retry-after", str(seconds)),),
    )


def tokens_used(usage: Mapping[str, Any] | None) -> int | None:
    """The tokens a request used, for `tpm`: its usage's `total_tokens`, else prompt plus
    completion; None when the usage is unknown (the stream ended before its usage)."""
    if not usage:
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
        return total
    counts = [usage.get("prompt_tokens"), usage.get("completion_tokens")]
    found = [n for n in counts if isinstance(n, int) and not isinstance(n, bool) and n >= 0]
    return sum(found) if found else None
