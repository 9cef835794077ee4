"""What a shared store offers the limiter, and how it fails. IO edge (no IO here itself)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from trioproxy.config_types import ClientKey

__all__ = ["SharedLimits", "StoreUnavailable", "store_location"]


class StoreUnavailable(Exception):
    """The shared store did not answer in time (or at all); the caller falls back to local
    limits. Never reaches a client."""


class SharedLimits(Protocol):
    """Per-key limits kept for every instance at once (RedisStore implements it)."""

    backend: str  # "redis"
    location: str  # the URL without its password, for logs and /health

    @property
    def degraded(self) -> bool:
        """True while the store is unavailable and requests use local limits."""

    async def admit(self, key: ClientKey) -> str:
        """Admit one request for `key` (its rpm, tpm and max_concurrent) or raise `RateLimited`.
        Returns the lease id of its concurrency slot ("" without max_concurrent). Raises
        `StoreUnavailable` within the store's timeout when the store cannot answer."""

    def release(self, key: ClientKey, lease: str) -> None:
        """Give the slot `lease` back. Never blocks; the store catches up in the background."""

    def debit(self, key: ClientKey, tokens: int) -> None:
        """Take `tokens` (used by a request that ended) from `key`'s token-rate bucket. Never
        blocks; sent with the key's next admission or by the background task."""

    async def open(self) -> bool:
        """Connect now rather than at the first request; True if the store answers."""

    async def aclose(self) -> None:
        """Stop the background work and close the connections."""


def store_location(url: str) -> str:
    """`url` for logs and /health: scheme, host, port and database, never the password."""
    if url == "memory":
        return "memory"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path or ''}"
