"""Auth: the client's proxy key to the caller's identity.

Stage: the first decision on every /v1 request, before the body is parsed. Pure.

Invariants: with keys configured, every /v1 request needs one of them, presented as
`Authorization: Bearer KEY` (what the OpenAI SDKs send) or `x-api-key: KEY` (what the Anthropic
SDKs send); comparison takes the same time whichever key matches and however much of it matches
(`hmac.compare_digest` over fixed-length digests, against every key). With no keys configured, the
caller is the anonymous key; the config layer makes sure the daemon then binds loopback only.
Errors never repeat the presented key.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from trioproxy.config_types import ClientKey
from trioproxy.errors import AuthError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["ANONYMOUS", "Authenticator", "key_from_headers"]

ANONYMOUS = ClientKey(name="anonymous", key="")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def key_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The presented key: `Authorization: Bearer KEY`, else `x-api-key`, else None."""
    bearer: str | None = None
    api_key: str | None = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, rest = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer":
                bearer = rest.strip()
        elif name == b"x-api-key":
            api_key = value.decode("latin-1").strip()
    return bearer if bearer is not None else api_key


class Authenticator:
    """Checks presented keys against the configured ones."""

    def __init__(self, keys: Iterable[ClientKey]) -> None:
        self._keys = [(_digest(k.key), k) for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def authenticate(self, presented: str | None) -> ClientKey:
        """The identity behind `presented`.

        Raises `AuthError` (401) when keys are configured and `presented` is none of them.
        """
        if not self._keys:
            return ANONYMOUS
        if not presented:
            raise AuthError(
                "missing API key: send your trioproxy key as 'Authorization: Bearer KEY'"
            )
        digest = _digest(presented)
        found: ClientKey | None = None
        for known, key in self._keys:  # no early exit: same time whichever key matches
            if hmac.compare_digest(known, digest):
                found = key
        if found is None:
            raise AuthError("invalid API key: check the trioproxy key you were given")
        return found
