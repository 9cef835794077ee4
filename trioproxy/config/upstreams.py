"""One `[upstream:NAME]` section to an `UpstreamConfig`. Pure.

- `type` is required; type-specific keys on another type are errors.
- `base_url` is written as the provider's own SDK takes it (DESIGN.md "proxy.ini").
- An upstream whose `api_key` resolves empty is disabled, not an error: `disabled_reason` names
  the variable, and its models answer 503 (`build.py` adds the one warning). `api_key` may be
  a comma list and `api_keys_file` may add more: a key pool (`upstream_keys.py`).
- No secret (`api_key`, header values, proxy credentials) appears in a message.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from trioproxy.config.upstream_keys import upstream_keys
from trioproxy.config.values import did_you_mean, is_loopback, show, url_problem
from trioproxy.config_types import UPSTREAM_TYPES, UpstreamConfig, UpstreamKey

if TYPE_CHECKING:
    from trioproxy.config.section import Section

__all__ = ["DEFAULT_BASE_URLS", "UPSTREAM_KEYS", "build_upstream"]

# Where each upstream type goes when `base_url` is not given (DESIGN.md "proxy.ini": written as the
# provider's own SDK takes it; Anthropic without /v1, OpenAI-style with /v1). openai-chat has no
# default: it is "any OpenAI-compatible provider", so the user must say which.
DEFAULT_BASE_URLS = {
    "anthropic": "https://api.anthropic.com",
    "openai-responses": "https://api.openai.com/v1",
}

UPSTREAM_KEYS = (
    "type",
    "base_url",
    "api_key",
    "api_keys_file",
    "connect_timeout",
    "first_byte_timeout",
    "read_timeout",
    "total_timeout",
    "max_retries",
    "retry_max_wait",
    "verify_tls",
    "ca_file",
    "https_proxy",
    "max_idle_connections",
    "idle_expiry",
    "anthropic_version",
    "anthropic_beta",
    "headers",
    "forward_headers",
    "demo_delay",
    "key_cooldown",
    "key_cooldown_max",
    "quota_cooldown",
    "breaker_failures",
    "breaker_open",
)

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2 token
_HEADER_START = re.compile(r"\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+\s*:")
# Headers trioproxy sets itself: framing (h11 owns them), the body type, and credentials (use
# api_key, so the key stays out of reprs and messages).
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "content-type",
        "authorization",
        "x-api-key",
        "anthropic-version",
        "anthropic-beta",
    }
)


def build_upstream(section: Section) -> UpstreamConfig:
    kind = section.text("type")
    kind = kind.lower() if kind is not None else None
    if kind is None:
        section.fail(None, f"needs type = one of {' | '.join(UPSTREAM_TYPES)}")
    if kind not in UPSTREAM_TYPES:
        section.fail(
            "type",
            f"must be one of {' | '.join(UPSTREAM_TYPES)}, got {show(kind)}"
            + did_you_mean(kind, UPSTREAM_TYPES),
        )
    for key, only in (
        ("anthropic_version", "anthropic"),
        ("anthropic_beta", "anthropic"),
        ("demo_delay", "demo"),
    ):
        if section.has(key) and kind != only:
            section.fail(key, f"applies only to type = {only} (this upstream is {kind})")

    base_url = _base_url(section, kind)
    keys: tuple[UpstreamKey, ...] = ()
    disabled_reason = ""
    if kind != "demo":
        keys, disabled_reason = upstream_keys(section)
    elif section.has("api_keys_file"):
        section.fail("api_keys_file", "does not apply to type = demo (it needs no key)")

    defaults = UpstreamConfig(name=section.name, type=kind)
    first_byte = section.optional_seconds("first_byte_timeout")
    return UpstreamConfig(
        name=section.name,
        type=kind,
        base_url=base_url,
        api_key=keys[0].key if keys else "",
        # One unlabelled key of weight 1 is what `api_key` alone says (`UpstreamConfig.pool`).
        keys=()
        if len(keys) == 1 and keys == UpstreamConfig(section.name, kind, api_key=keys[0].key).pool
        else keys,
        api_keys_file=section.text("api_keys_file") or None,
        disabled_reason=disabled_reason,
        connect_timeout=section.seconds(
            "connect_timeout", defaults.connect_timeout, allow_zero=False
        ),
        first_byte_timeout=first_byte,
        read_timeout=section.seconds("read_timeout", defaults.read_timeout, allow_zero=False),
        total_timeout=section.optional_seconds("total_timeout"),
        max_retries=section.integer("max_retries", defaults.max_retries, minimum=0),
        retry_max_wait=section.seconds("retry_max_wait", defaults.retry_max_wait, allow_zero=True),
        verify_tls=section.boolean("verify_tls", defaults.verify_tls),
        ca_file=section.optional_string("ca_file"),
        https_proxy=_https_proxy(section),
        max_idle_connections=section.integer(
            "max_idle_connections", defaults.max_idle_connections, minimum=0
        ),
        idle_expiry=section.seconds("idle_expiry", defaults.idle_expiry, allow_zero=True),
        anthropic_version=section.string("anthropic_version", defaults.anthropic_version)
        or defaults.anthropic_version,
        anthropic_beta=section.items("anthropic_beta"),
        extra_headers=_headers(section),
        forward_headers=_forward_headers(section),
        demo_delay=section.seconds("demo_delay", defaults.demo_delay, allow_zero=True),
        key_cooldown=section.seconds("key_cooldown", defaults.key_cooldown, allow_zero=False),
        key_cooldown_max=section.seconds(
            "key_cooldown_max", defaults.key_cooldown_max, allow_zero=False
        ),
        quota_cooldown=section.seconds("quota_cooldown", defaults.quota_cooldown, allow_zero=False),
        breaker_failures=section.integer("breaker_failures", defaults.breaker_failures, minimum=0),
        breaker_open=section.seconds("breaker_open", defaults.breaker_open, allow_zero=False),
    )


def _base_url(section: Section, kind: str) -> str:
    url = section.text("base_url")
    if not url:
        if kind == "openai-chat":
            section.fail(
                None,
                "needs base_url for type = openai-chat: the provider's OpenAI-compatible URL "
                "with /v1 (e.g. https://openrouter.ai/api/v1); trioproxy appends "
                "/chat/completions",
            )
        return DEFAULT_BASE_URLS.get(kind, "")
    if "@" in url:
        section.fail("base_url", "cannot hold credentials (user:password@); use api_key or headers")
    if (problem := url_problem(url)) is not None:
        section.fail("base_url", f"{problem}, got {show(url)}")
    url = url.rstrip("/")
    parts = urlsplit(url)
    if kind == "anthropic" and parts.path.endswith("/v1"):
        section.ctx.warnings.append(
            f"upstream '{section.name}': base_url ends in /v1, but trioproxy appends /v1/messages "
            "(as the Anthropic SDK does); write it without /v1"
        )
    if kind != "demo" and parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        section.ctx.warnings.append(
            f"upstream '{section.name}': base_url is plain http to {parts.hostname}, so its "
            "api_key crosses the network unencrypted"
        )
    return url


def _https_proxy(section: Section) -> str | None:
    url = section.text("https_proxy")
    if not url:
        return None
    if (problem := url_problem(url)) is not None:
        # May hold user:password@, so the value is not shown.
        section.fail("https_proxy", f"{problem} (e.g. http://proxy.internal:3128)")
    return url


def _headers(section: Section) -> tuple[tuple[str, str], ...]:
    value = section.text("headers")
    if not value:
        return ()
    entries: list[str] = []
    for line in value.split("\n"):
        # ", " separates entries on one line only when a `Name:` follows it.
        pieces = re.split(r",(?=" + _HEADER_START.pattern + ")", line)
        entries.extend(piece.strip() for piece in pieces if piece.strip())
    headers = []
    seen: set[str] = set()
    for entry in entries:
        name, colon, header_value = entry.partition(":")
        name, header_value = name.strip(), header_value.strip()
        if not colon or not _HEADER_NAME.fullmatch(name):
            section.fail(
                "headers",
                "must be 'Name: value' entries, one per line (or ', '-separated), e.g. "
                "'X-Title: my-app'; header names are letters, digits and -",
            )
        lowered = name.lower()
        if lowered in _RESERVED_HEADERS:
            section.fail(
                "headers",
                f"cannot set {name}: trioproxy sets it "
                "(use api_key / anthropic_version / anthropic_beta)",
            )
        if lowered in seen:
            section.fail("headers", f"sets {name} twice")
        if any(not c.isprintable() and c != "\t" for c in header_value):
            section.fail("headers", f"{name} has a control character in its value")
        seen.add(lowered)
        headers.append((lowered, header_value))
    return tuple(headers)


def _forward_headers(section: Section) -> tuple[str, ...]:
    names = []
    for name in section.items("forward_headers"):
        lowered = name.lower()
        if not _HEADER_NAME.fullmatch(name):
            section.fail("forward_headers", f"{name!r} is not a header name")
        # The client's own credentials must never reach an upstream (DESIGN.md, Errors).
        if lowered in _RESERVED_HEADERS or lowered in ("cookie", "proxy-authorization"):
            section.fail("forward_headers", f"{name} can never be forwarded")
        names.append(lowered)
    return tuple(names)
