"""Routing: the client's model name to an ordered list of upstreams to try.

Stage: after auth and validation, before translation. Pure.

Rules: an exact `[model:NAME]` wins; otherwise the first pattern section (`[model:gpt-*]`, fnmatch
syntax, in file order) that matches; patterns forward the client's model name unless the section
sets `upstream_model`. A model's upstreams are tried in the order written (failover before the
first byte), or, with `strategy = weighted`, in an order the engine picks per request
(routing/pool.py). Disabled upstreams are skipped, and so are upstreams whose circuit breaker is
open (`blocked`, routing/health.py); when none is left the request gets a 503 that says why (e.g.
which environment variable is missing), with `retry-after` when a breaker will let it through.

The key pool of each upstream and its health live beside this module: routing/pool.py (which key
a request uses) and routing/health.py (what a failure does to the key and the upstream).
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trioproxy.errors import PermissionDenied, UnknownModel, UpstreamUnavailable
from trioproxy.translate.base import Target

if TYPE_CHECKING:
    from collections.abc import Mapping

    from trioproxy.config_types import ClientKey, ModelConfig, ProxyConfig, UpstreamConfig

__all__ = ["Candidate", "Route", "Router"]


@dataclass(frozen=True, slots=True)
class Candidate:
    upstream: UpstreamConfig
    target: Target


@dataclass(frozen=True, slots=True)
class Route:
    model: str  # as the client named it
    candidates: tuple[Candidate, ...]  # enabled upstreams, in failover order
    section: str = ""  # the [model:NAME] that matched
    weights: tuple[float, ...] | None = None  # per candidate when strategy = weighted


class Router:
    def __init__(self, config: ProxyConfig) -> None:
        self._upstreams = config.upstreams
        self._exact = {m.name: m for m in config.models if not m.is_pattern}
        self._patterns = [m for m in config.models if m.is_pattern]

    def find(self, model: str) -> ModelConfig | None:
        if (found := self._exact.get(model)) is not None:
            return found
        for pattern in self._patterns:
            if fnmatch.fnmatchcase(model, pattern.name):
                return pattern
        return None

    def route(
        self,
        model: str,
        key: ClientKey | None = None,
        *,
        blocked: Mapping[str, float] | None = None,
    ) -> Route:
        """The upstreams for `model`. Raises UnknownModel (404), PermissionDenied (403), or
        UpstreamUnavailable (503) when every upstream of the model is disabled or `blocked`
        (upstream name -> seconds until its circuit breaker lets a request through)."""
        found = self.find(model)
        if found is None:
            raise UnknownModel(
                f"The model '{model}' does not exist or is not served by this proxy; "
                "GET /v1/models lists the models you can use.",
                param="model",
            )
        if (
            key is not None
            and key.models
            and not any(fnmatch.fnmatchcase(model, allowed) for allowed in key.models)
        ):
            raise PermissionDenied(f"your API key may not use the model '{model}'", param="model")
        candidates = []
        weights = []
        reasons = []
        wait = math.inf
        for index, name in enumerate(found.upstreams):
            upstream = self._upstreams[name]
            if not upstream.enabled:
                reasons.append(f"upstream '{name}' is disabled: {upstream.disabled_reason}")
                continue
            if blocked and name in blocked:
                wait = min(wait, blocked[name])
                reasons.append(
                    f"upstream '{name}' is failing (its circuit breaker is open for "
                    f"{blocked[name]:.0f} s more)"
                )
                continue
            target = Target(upstream_model=found.upstream_model or model, defaults=found.defaults)
            candidates.append(Candidate(upstream, target))
            weights.append(found.weights[index] if found.weights else 1.0)
        if not candidates:
            headers: tuple[tuple[str, str], ...] = ()
            if wait != math.inf:
                headers = (("retry-after", str(max(1, math.ceil(wait)))),)
            raise UpstreamUnavailable(
                f"the model '{model}' cannot be served right now: " + "; ".join(reasons),
                headers=headers,
            )
        return Route(
            model=model,
            candidates=tuple(candidates),
            section=found.name,
            weights=tuple(weights) if found.strategy == "weighted" else None,
        )

    def owner_of(self, model: str) -> str | None:
        """The first enabled upstream serving `model` (a pattern model matches the name), or None
        when no model matches or all of its upstreams are disabled (as `listed_models` hides it)."""
        found = self.find(model)
        if found is None:
            return None
        return next((u for u in found.upstreams if self._upstreams[u].enabled), None)

    def listed_models(self) -> list[tuple[str, str]]:
        """(model id, owning upstream) for /v1/models: exact names (patterns cannot be listed)."""
        out = []
        for model in self._exact.values():
            enabled = [u for u in model.upstreams if self._upstreams[u].enabled]
            if enabled:
                out.append((model.name, enabled[0]))
        return out
