"""The service: what every face shares, one configuration generation at a time.

Stage: the IO edge, below the faces and above the engine. A `Runtime` is what outlives a reload:
the upstream HTTP client, the shutdown `Lifecycle`, the metrics and the per-key limiter (a reload
must not reset anyone's rate-limit bucket). A `Service` is one configuration generation: the
config, its engine, its authenticator and request limits. SIGHUP builds a new `Service`
(`Runtime.reload`); a request takes `runtime.service` once, when it starts, and keeps that one to
its end, so a reload never changes a stream half-way.

Faces never import each other; they all import this module and `pump`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
from typing import TYPE_CHECKING, Any

import trio

from trioproxy._version import __version__
from trioproxy.auth import Authenticator, key_from_headers
from trioproxy.engine import Engine
from trioproxy.errors import AuthError
from trioproxy.logs import log_access
from trioproxy.metrics import Metrics
from trioproxy.pump import KeepAlives
from trioproxy.record import Outcome, request_sample
from trioproxy.routing.pool import KeyPools
from trioproxy.store import Limiter, open_limiter, shared_health
from trioproxy.validate import RequestLimits

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from trioproxy.config_types import ClientKey, ProxyConfig
    from trioproxy.record import RequestRecord
    from trioproxy.upstream import HTTPClient

__all__ = ["Lifecycle", "Runtime", "Service"]

logger = logging.getLogger("trioproxy")


class Lifecycle:
    """Graceful shutdown and the count of requests in flight, across every generation.

    Shutdown comes in two steps: `drain()` (stop taking requests; idle connections and idle
    WebSockets close now) and `expire()` (when `drain_timeout` has passed: every request still
    running is cancelled, and its pump ends it with a `server_shutdown` error).
    """

    def __init__(self) -> None:
        self.draining = trio.Event()
        self.expired = trio.Event()
        self.in_flight = 0  # requests inside the pump, every face
        self.streams = 0  # of those, streaming ones
        self.keepalives = KeepAlives()  # the one timer of every stream's keep-alive
        self._idle = trio.Event()
        self._idle.set()
        # Engine scopes to cancel on `expire`, with the request each one serves. A registry rather
        # than a watcher task per request: a task costs a spawn per request and memory per stream.
        self._guarded: dict[trio.CancelScope, RequestRecord] = {}

    def drain(self) -> None:
        self.draining.set()

    def expire(self) -> None:
        self.draining.set()
        self.expired.set()
        for scope, record in list(self._guarded.items()):
            self._end(scope, record)

    async def wait_idle(self) -> None:
        """Return once no request is in flight."""
        while self.in_flight:
            await self._idle.wait()

    @contextlib.contextmanager
    def admitted(self, *, stream: bool) -> Iterator[None]:
        """Counts one request in flight while inside."""
        if self.in_flight == 0:
            self._idle = trio.Event()
        self.in_flight += 1
        self.streams += stream
        try:
            yield
        finally:
            self.in_flight -= 1
            self.streams -= stream
            if self.in_flight == 0:
                self._idle.set()

    @contextlib.contextmanager
    def guard(self, scope: trio.CancelScope, record: RequestRecord) -> Iterator[None]:
        """While inside, `expire()` cancels `scope` and marks `record` as ended by shutdown."""
        if self.expired.is_set():
            self._end(scope, record)
        self._guarded[scope] = record
        try:
            yield
        finally:
            del self._guarded[scope]

    @staticmethod
    def _end(scope: trio.CancelScope, record: RequestRecord) -> None:
        if record.outcome is None:
            record.outcome = Outcome.SHUTDOWN
        scope.cancel()


class Service:
    """One configuration generation: config, engine, authenticator, request limits.

    Args:
        config: the parsed configuration.
        runtime: what the generations share (HTTP client, lifecycle, metrics, limiter).
    """

    def __init__(self, config: ProxyConfig, runtime: Runtime) -> None:
        self.config = config
        self.runtime = runtime
        self.engine = Engine(config, runtime.http, runtime.keypools, metrics=runtime.metrics)
        self.auth = Authenticator(config.proxy.keys)
        self.limits = RequestLimits.from_settings(config.proxy)
        # Client headers some upstream forwards (`forward_headers`): a request keeps only these
        # (never its Authorization: credentials cannot be listed).
        self.forwarded_headers = frozenset(
            name.encode("latin-1")
            for upstream in config.upstreams.values()
            for name in upstream.forward_headers
        )

    @property
    def lifecycle(self) -> Lifecycle:
        return self.runtime.lifecycle

    @property
    def limiter(self) -> Limiter:
        return self.runtime.limiter

    def authenticate(self, presented: str | None) -> ClientKey:
        """The caller behind `presented` (a proxy key, or None); raises `AuthError`."""
        return self.auth.authenticate(presented)

    def check_metrics_key(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        expected = self.config.proxy.metrics_key
        if expected is None:
            return
        presented = key_from_headers(headers) or ""
        digest = hashlib.sha256
        if not hmac.compare_digest(
            digest(presented.encode()).digest(), digest(expected.encode()).digest()
        ):
            raise AuthError("GET /metrics needs the metrics_key as 'Authorization: Bearer KEY'")

    def finish(self, record: RequestRecord) -> None:
        """Close the books on one request: the access-log line, metrics, hooks."""
        record.ended = trio.current_time()
        if record.outcome is None:
            record.outcome = Outcome.CLIENT_CANCELLED if record.status == 0 else Outcome.COMPLETED
        log_access(record)
        self.runtime.metrics.observe_request(request_sample(record))
        for hook in self.runtime.on_finish:
            hook(record)

    # -- small routes' answers, shared by every face -------------------------------------------

    def health(self) -> dict[str, Any]:
        """Status, version and each upstream's state. Holds no secrets."""
        lifecycle = self.lifecycle
        return {
            "status": "draining" if lifecycle.draining.is_set() else "ok",
            "version": __version__,
            "auth": "on" if self.auth.enabled else "off (loopback only)",
            "upstreams": {
                name: {
                    "type": upstream.type,
                    "enabled": upstream.enabled,
                    **({"reason": upstream.disabled_reason} if not upstream.enabled else {}),
                    # Key labels, weights and states and the circuit breaker (never a key).
                    **(
                        self.runtime.keypools.health(upstream, trio.current_time())
                        if upstream.enabled and upstream.type != "demo"
                        else {}
                    ),
                }
                for name, upstream in self.config.upstreams.items()
            },
            "active_streams": lifecycle.streams,
            # "degraded" while the shared store (`[proxy] store`) is unavailable and each
            # instance applies its own limits (docs/operations.md "Scaling out").
            "store": self.runtime.limiter.status(),
            "store_backend": self.runtime.limiter.backend,
        }

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": model, "object": "model", "created": 0, "owned_by": upstream}
                for model, upstream in self.engine.router.listed_models()
            ],
        }

    def render_metrics(self) -> str:
        lifecycle = self.lifecycle
        return self.runtime.metrics.render(
            {
                "trioproxy_active_streams": ("Streaming requests being served.", lifecycle.streams),
                "trioproxy_in_flight": ("Requests being served, every face.", lifecycle.in_flight),
                "trioproxy_open_connections": (
                    "Client connections open (HTTP and WebSocket).",
                    self.runtime.connections,
                ),
            }
        )


class Runtime:
    """What outlives a configuration generation; `service` is the current one.

    Args:
        config: the first configuration.
        http: the upstream HTTP client. The runtime does not close it: whoever made it does.
    """

    def __init__(self, config: ProxyConfig, http: HTTPClient) -> None:
        self.http = http
        self.lifecycle = Lifecycle()
        self.metrics = Metrics()
        # Per-key limits: this process's, or shared by every instance (`[proxy] store`).
        # Raises ConfigError when the store needs an extra that is not installed.
        self.limiter = open_limiter(config.proxy, self.metrics)
        # Upstream key pools and health (cool-downs, disabled keys, breakers): kept across
        # reloads, each reload tells it the new config (a key still listed keeps its cool-down).
        # With a shared store they are every instance's (store/health.py), else this process's.
        self.keypools = KeyPools(shared_health(self.limiter))
        self.keypools.configure(config)
        self.metrics.add_collector(lambda: self.keypools.gauges(trio.current_time()))
        self.on_finish: list[Callable[[RequestRecord], None]] = []
        self.connections = 0  # client connections the servers hold open
        self.service = Service(config, self)

    def reload(self, config: ProxyConfig) -> Service:
        """Serve new requests with `config`; requests in flight keep their own service."""
        self.keypools.configure(config)
        self.service = Service(config, self)
        return self.service

    @contextlib.contextmanager
    def connection(self) -> Iterator[None]:
        """Counts one client connection while inside (the `trioproxy_open_connections` gauge)."""
        self.connections += 1
        try:
            yield
        finally:
            self.connections -= 1
