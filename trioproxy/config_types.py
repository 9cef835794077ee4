"""The parsed configuration: a tree of frozen dataclasses with typed defaults.

Stage: configuration (pure). `config.parse_config(text, environ)` builds a `ProxyConfig` from
proxy.ini; embedders may also build one directly. Secrets carry `repr=False` so that no log line,
traceback or `repr()` shows them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from trioproxy.translate.base import ModelDefaults

__all__ = [
    "SERVERS",
    "STRATEGIES",
    "UPSTREAM_TYPES",
    "ClientKey",
    "ModelConfig",
    "ProxyConfig",
    "ProxySettings",
    "UpstreamConfig",
    "UpstreamKey",
    "key_fingerprint",
]

UPSTREAM_TYPES = ("anthropic", "openai-responses", "openai-chat", "demo")
# `[proxy] server`: native is our own HTTP/1.1 server on h11; hypercorn serves the ASGI app, for
# TLS and HTTP/2 (DESIGN.md "The edge").
SERVERS = ("native", "hypercorn")
# `[model:*] strategy`: ordered fails over in the order written; weighted spreads requests over
# the model's upstreams by weight and load (routing/pool.py states the rule).
STRATEGIES = ("ordered", "weighted")


def key_fingerprint(key: str) -> str:
    """A stable, non-secret id for an upstream key: 16 hex digits of its SHA-256. It names the
    key's health in the store (cool-downs survive a reload that keeps the key, whatever its
    label) and is the key's label when none is given (the first 8 digits, `fp-1a2b3c4d`)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class UpstreamKey:
    """One key of an upstream's pool. `label` goes to logs, metrics and /health, never `key`."""

    label: str
    key: str = field(repr=False)
    weight: float = 1.0  # share of the requests, relative to the pool's other keys
    id: str = ""  # key_fingerprint(key); filled in when empty

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", key_fingerprint(self.key))


@dataclass(frozen=True, slots=True)
class ClientKey:
    """One proxy key a client may present. `name` goes to logs and metrics, never `key`."""

    name: str
    key: str = field(repr=False)
    models: tuple[str, ...] = ()  # fnmatch patterns the key may use; empty = every model
    max_concurrent: int | None = None  # requests in flight at once
    rpm: float | None = None  # requests per minute (token bucket, burst = rpm)
    tpm: int | None = None  # tokens per minute, prompt + completion (token bucket, burst = tpm)


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """The `[proxy]` section."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 8003
    keys: tuple[ClientKey, ...] = ()
    keepalive_interval: float = 15.0  # seconds of silence before a ": keep-alive" comment
    max_body_bytes: int = 10 * 1024 * 1024
    drain_timeout: float = 10.0  # seconds open streams get to finish after SIGTERM
    write_timeout: float = 30.0  # seconds a client may stall a write before its stream is cancelled
    log_level: str = "info"
    log_format: str = "text"  # text | json
    metrics: bool = True  # serve GET /metrics
    metrics_key: str | None = field(default=None, repr=False)  # if set, /metrics needs it
    ws_max_in_flight: int = 8  # WebSocket requests in flight per socket
    ws_max_message_bytes: int = 1024 * 1024
    max_messages: int = 2048
    max_tools: int = 256
    max_json_depth: int = 64
    cors_origins: tuple[str, ...] = ()  # empty: CORS off
    # The server layer (DESIGN.md "The edge").
    server: str = "native"  # one of SERVERS
    http2: bool = False  # offer HTTP/2 on server = hypercorn (see config/settings.py _http2)
    certfile: str | None = None  # PEM certificate chain, resolved path; TLS needs server=hypercorn
    keyfile: str | None = None  # PEM private key of certfile, resolved path; set with certfile
    head_timeout: float = 10.0  # seconds to receive a whole request head (against slowloris)
    body_timeout: float = 30.0  # seconds of silence allowed inside a request body
    # Seconds an idle keep-alive connection is kept: longer than common load balancers' idle
    # timeout (60 s), so that they, not we, close it (no request is sent on a connection we closed).
    keep_alive_timeout: float = 75.0
    # Request head limit in bytes, larger answers 431. nginx's default is 4 buffers of 8 KiB
    # (large_client_header_buffers); an API client needs a few hundred bytes.
    max_header_bytes: int = 32 * 1024
    # Where per-key limits live (docs/operations.md "Scaling out"): "memory" (this process only)
    # or a redis:// / rediss:// URL shared by every instance. The URL may hold a password.
    store: str = field(default="memory", repr=False)
    store_timeout: float = 50.0  # milliseconds a request waits for the store before local limits
    store_prefix: str = "trioproxy:"  # namespace of every key trioproxy writes in the store

    @property
    def tls(self) -> bool:
        """Whether clients connect with TLS (certfile and keyfile are set)."""
        return self.certfile is not None and self.keyfile is not None


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One `[upstream:NAME]` section."""

    name: str
    type: str  # one of UPSTREAM_TYPES
    base_url: str = ""
    # The first key of the pool (kept for code that knows one key); `keys` is the whole pool.
    api_key: str = field(default="", repr=False)
    # The key pool (`api_key = ${A}, ${B}` and `api_keys_file`); empty: `api_key` alone.
    keys: tuple[UpstreamKey, ...] = ()
    api_keys_file: str | None = None  # as written, for --check
    # Why the upstream is disabled ("ANTHROPIC_API_KEY is not set"), or "" when it is enabled.
    disabled_reason: str = ""
    connect_timeout: float = 10.0  # seconds
    first_byte_timeout: float | None = None  # seconds until the response head; None: read_timeout
    read_timeout: float = 600.0  # longest silence between bytes from upstream
    total_timeout: float | None = None  # seconds for the whole request, None: no limit
    max_retries: int = 2  # retries before the first byte (then the next upstream)
    # Total seconds of backoff one request may spend on this upstream. Short: a proxy must not hold
    # a client silently (issue 17); a longer `retry-after` goes to the client, whose SDK retries.
    retry_max_wait: float = 3.0
    verify_tls: bool = True
    ca_file: str | None = None
    # None: HTTPS_PROXY / NO_PROXY from the environment. Not in repr: it may hold user:password@.
    https_proxy: str | None = field(default=None, repr=False)
    max_idle_connections: int = 100
    idle_expiry: float = 60.0  # seconds an idle pooled connection is kept
    anthropic_version: str = "2023-06-01"
    anthropic_beta: tuple[str, ...] = ()
    # Static headers sent on every request (names lower-case). Not in repr: a gateway token may
    # travel in one.
    extra_headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    demo_delay: float = 0.02  # seconds between demo deltas
    # Client request headers passed on to this upstream (lower-case names). Nothing else the
    # client sends is forwarded; credentials and hop-by-hop headers can never be listed.
    forward_headers: tuple[str, ...] = ()
    # Key health (routing/health.py). A 429 without retry-after cools its key for
    # `key_cooldown` s, doubled per 429 in a row up to `key_cooldown_max`; a quota or billing
    # error for `quota_cooldown` s. `breaker_failures` upstream failures in a row (5xx, 529,
    # timeouts, refused connections) open the circuit for `breaker_open` s; 0 turns it off.
    key_cooldown: float = 1.0
    key_cooldown_max: float = 60.0
    quota_cooldown: float = 3600.0
    breaker_failures: int = 5
    breaker_open: float = 30.0

    @property
    def enabled(self) -> bool:
        return not self.disabled_reason

    @property
    def pool(self) -> tuple[UpstreamKey, ...]:
        """The keys requests may use: `keys`, or `api_key` alone (an embedder's config)."""
        if self.keys:
            return self.keys
        if self.api_key:
            return (UpstreamKey("fp-" + key_fingerprint(self.api_key)[:8], self.api_key),)
        return ()


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """One `[model:NAME]` section. NAME may be an fnmatch pattern (`gpt-*`)."""

    name: str
    upstreams: tuple[str, ...]  # tried in order (failover before the first byte)
    upstream_model: str | None = None  # None: the client's model name
    strategy: str = "ordered"  # one of STRATEGIES
    weights: tuple[float, ...] = ()  # per upstream, for strategy = weighted; empty: equal
    defaults: ModelDefaults = field(default_factory=ModelDefaults)

    @property
    def is_pattern(self) -> bool:
        return any(c in self.name for c in "*?[")


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    proxy: ProxySettings = field(default_factory=ProxySettings)
    upstreams: dict[str, UpstreamConfig] = field(default_factory=dict)
    models: tuple[ModelConfig, ...] = ()
    warnings: tuple[str, ...] = ()  # said once at start-up (e.g. an upstream disabled)
