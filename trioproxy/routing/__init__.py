"""Routing: the client's model name to an ordered list of upstreams to try.

Stage: after auth and validation, before translation. Pure.

Rules: an exact `[model:NAME]` wins; otherwise the first pattern section (`[model:gpt-*]`, fnmatch
syntax, in file order) that matches; patterns forward the client's model name unless the section
sets `upstream_model`. A model's upstreams are tried in the order written (failover before the
first byte); disabled upstreams are skipped, and when every one is disabled the request gets a 503
that says why (e.g. which environment variable is missing).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trioproxy.errors import PermissionDenied, UnknownModel, UpstreamUnavailable
from trioproxy.translate.base import Target

if TYPE_CHECKING:
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

    def route(self, model: str, key: ClientKey | None = None) -> Route:
        """The upstreams for `model`. Raises UnknownModel (404), PermissionDenied (403), or
        UpstreamUnavailable (503) when every upstream of the model is disabled."""
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
        reasons = []
        for name in found.upstreams:
            upstream = self._upstreams[name]
            if not upstream.enabled:
                reasons.append(f"upstream '{name}' is disabled: {upstream.disabled_reason}")
                continue
            target = Target(upstream_model=found.upstream_model or model, defaults=found.defaults)
            candidates.append(Candidate(upstream, target))
        if not candidates:
            raise UpstreamUnavailable(
                f"the model '{model}' cannot be served right now: " + "; ".join(reasons)
            )
        return Route(model=model, candidates=tuple(candidates))

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
