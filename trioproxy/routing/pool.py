"""Key pools: which key of an upstream a request uses, and which upstream of a weighted model.

Stage: routing (pure). No clock, no randomness, no IO: `now` (seconds on the pool's clock) and
`jitter` come from the engine. `KeyPools` lives in the `Runtime`, so it outlives a reload: the
in-flight counts of streams started under the old configuration, and every key's health.

**The selection rule** (docs/configuration.md "Key pools"). Among the upstream's keys that are
ready (not cooling down, not disabled) and not yet failed for this request, take the key with
the fewest requests in flight per unit of weight, `in_flight / weight`; ties go to the key that
has been chosen least per unit of weight (each choice adds `1 / weight` to the key's `pass`;
a key new to the pool starts at the pool's lowest pass), then to the key written first. An idle
pool therefore rotates through its keys in proportion to their weights, and a busy one sends
each request to the key with the most room. A request holds its key until it ends: a stream
keeps its key for its whole life. `strategy = weighted` orders a model's upstreams by the same
rule (requests in flight per upstream, the model's `weights`), the rest as failover.

**Shared state.** What the pool learns about keys and upstreams (`KeyHealth`, `Breaker`) is kept
behind `HealthStore`, a small synchronous interface; `MemoryStore` is the default. The store
shared by several instances (issue 22, Redis: trioproxy/store/health.py) implements the same five
methods over a local copy that it publishes and refreshes in the background, so that no request
waits on the network; the states merge there ("latest `until` wins" for keys). It converts times
to and from Redis's clock itself, so the pools keep whatever clock the engine passes (trio's).
Keys are named in the store by fingerprint (`UpstreamKey.id`), never by the key. In-flight counts
and passes are per instance and stay here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from trioproxy.metrics import GaugeSample
from trioproxy.routing.health import (
    Breaker,
    BreakerState,
    Failure,
    HealthPolicy,
    KeyHealth,
    KeyState,
    admit,
    after_answer,
    after_key_failure,
    after_success,
    blocked_for,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from trioproxy.config_types import ProxyConfig, UpstreamConfig, UpstreamKey

__all__ = [
    "HealthStore",
    "KeyPools",
    "KeyView",
    "Lease",
    "MemoryStore",
    "NoKey",
    "Outcome",
    "pick",
]


class HealthStore(Protocol):
    """Where key health and breaker states live. Synchronous and fast (no request waits on it)."""

    def key(self, upstream: str, key_id: str) -> KeyHealth:
        """The key's health; `KeyHealth()` (ready) when nothing is known."""

    def set_key(self, upstream: str, key_id: str, health: KeyHealth) -> None: ...

    def breaker(self, upstream: str) -> Breaker:
        """The upstream's breaker; `Breaker()` (closed) when nothing is known."""

    def set_breaker(self, upstream: str, breaker: Breaker) -> None: ...

    def retain(self, keys: set[tuple[str, str]], upstreams: set[str]) -> None:
        """A reload: forget keys and upstreams not listed, and re-enable disabled keys (401/403
        disable a key until the next reload); cool-downs of keys still listed stand."""


class MemoryStore:
    """The default `HealthStore`: this process's dictionaries."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], KeyHealth] = {}
        self._breakers: dict[str, Breaker] = {}

    def key(self, upstream: str, key_id: str) -> KeyHealth:
        return self._keys.get((upstream, key_id)) or _READY

    def set_key(self, upstream: str, key_id: str, health: KeyHealth) -> None:
        if health == _READY:
            self._keys.pop((upstream, key_id), None)
        else:
            self._keys[(upstream, key_id)] = health

    def breaker(self, upstream: str) -> Breaker:
        return self._breakers.get(upstream) or _CLOSED

    def set_breaker(self, upstream: str, breaker: Breaker) -> None:
        if breaker == _CLOSED:
            self._breakers.pop(upstream, None)
        else:
            self._breakers[upstream] = breaker

    def retain(self, keys: set[tuple[str, str]], upstreams: set[str]) -> None:
        self._keys = {
            where: health
            for where, health in self._keys.items()
            if where in keys and health.until != math.inf
        }
        self._breakers = {u: b for u, b in self._breakers.items() if u in upstreams}


_READY = KeyHealth()
_CLOSED = Breaker()


@dataclass(slots=True)
class _Load:
    """Per instance: requests in flight and the stride-scheduling pass of one key or upstream."""

    in_flight: int = 0
    passes: float = 0.0


def pick(loads: Sequence[tuple[int, float, float]]) -> int:
    """The index of the next choice among (in_flight, passes, weight) entries: the fewest in
    flight per unit of weight, then the lowest pass, then the first. `loads` is not empty."""
    return min(range(len(loads)), key=lambda i: _rank(loads, i))


def _rank(loads: Sequence[tuple[int, float, float]], i: int) -> tuple[float, float, int]:
    in_flight, passes, weight = loads[i]
    return in_flight / weight, passes, i


@dataclass(frozen=True, slots=True)
class Lease:
    """One key held by one request attempt; `KeyPools.release` it when the attempt ends."""

    upstream: str
    key: UpstreamKey


@dataclass(frozen=True, slots=True)
class NoKey:
    """No key of the upstream may be used now."""

    # Seconds until the soonest key is ready (0 for a ready key this request already tried, so
    # that trying it again is a retry like any other); None: every key is disabled.
    retry_in: float | None
    cooling: int  # keys cooling down
    disabled: int  # keys refused (401 / 403) until reload


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one answer did to the key and the upstream, for the engine's logs and metrics."""

    failure: Failure | None  # None: a success
    key_state: KeyState  # the key's state after it
    changed: bool  # the key's state changed (READY -> COOLING, -> DISABLED): log it once
    cooldown: float  # seconds the key now cools down (0 when ready, inf when disabled)
    breaker_opened: bool  # this answer opened the upstream's breaker


@dataclass(frozen=True, slots=True)
class KeyView:
    """One key as /health and /metrics show it (by label, never the key)."""

    label: str
    weight: float
    state: str
    in_flight: int
    retry_in: float  # seconds until ready; 0 when ready, inf when disabled
    reason: str


class KeyPools:
    """Every upstream's key pool and breaker; one per runtime (survives reloads)."""

    def __init__(self, store: HealthStore | None = None) -> None:
        self.store: HealthStore = store if store is not None else MemoryStore()
        self._keys: dict[tuple[str, str], _Load] = {}
        self._routes: dict[tuple[str, str], _Load] = {}  # (model section, upstream): passes
        self._config: ProxyConfig | None = None

    def configure(self, config: ProxyConfig) -> None:
        """Adopt `config` (start-up and every reload): forget what it no longer lists and
        re-enable disabled keys; a cool-down of a key that is still listed stands."""
        keys = {
            (name, key.id) for name, upstream in config.upstreams.items() for key in upstream.pool
        }
        self.store.retain(keys, set(config.upstreams))
        self._keys = {
            where: load for where, load in self._keys.items() if load.in_flight or where in keys
        }
        self._config = config

    # -- breakers ---------------------------------------------------------------------------

    def blocked(self, names: Iterable[str], now: float) -> dict[str, float]:
        """Upstreams among `names` whose breaker refuses requests now, with seconds to wait."""
        out = {}
        for name in names:
            wait = blocked_for(self.store.breaker(name), now)
            if wait is not None:
                out[name] = wait
        return out

    def admit(self, upstream: UpstreamConfig, now: float) -> float | None:
        """Let one request through to `upstream` (taking the probe slot of a breaker whose open
        time is up), or the seconds until it may be tried."""
        breaker = self.store.breaker(upstream.name)
        after, admitted = admit(breaker, now=now, policy=HealthPolicy.of(upstream))
        if not admitted:
            return blocked_for(breaker, now) or 0.0
        if after != breaker:
            self.store.set_breaker(upstream.name, after)
        return None

    # -- keys -------------------------------------------------------------------------------

    def acquire(self, upstream: UpstreamConfig, now: float, tried: set[str]) -> Lease | NoKey:
        """The key a request should use now (the selection rule), leaving out `tried` (key ids
        that failed for this request); or why there is none."""
        ready: list[UpstreamKey] = []
        soonest: float | None = None
        cooling = disabled = 0
        for key in upstream.pool:
            health = self.store.key(upstream.name, key.id)
            state = health.state(now)
            if state is KeyState.READY and key.id not in tried:
                ready.append(key)
            elif state is KeyState.DISABLED:
                disabled += 1
            else:
                if state is KeyState.COOLING:
                    cooling += 1
                wait = health.remaining(now)
                soonest = wait if soonest is None else min(soonest, wait)
        if not ready:
            return NoKey(soonest, cooling, disabled)
        loads = [self._load(upstream, key) for key in ready]
        chosen = pick(
            [
                (load.in_flight, load.passes, key.weight)
                for load, key in zip(loads, ready, strict=True)
            ]
        )
        load, key = loads[chosen], ready[chosen]
        load.in_flight += 1
        load.passes += 1 / key.weight
        return Lease(upstream.name, key)

    def release(self, lease: Lease) -> None:
        load = self._keys.get((lease.upstream, lease.key.id))
        if load is not None and load.in_flight:
            load.in_flight -= 1

    def report(
        self,
        upstream: UpstreamConfig,
        key: UpstreamKey | None,
        failure: Failure | None,
        *,
        now: float,
        retry_after: float | None = None,
        jitter: float = 0.5,
    ) -> Outcome:
        """Record one answer of `upstream` (with `key`; None for a keyless upstream, or when
        the failure came before a key was used). `failure` None is a success."""
        policy = HealthPolicy.of(upstream)
        breaker = self.store.breaker(upstream.name)
        after = after_answer(
            breaker, upstream_failed=failure is Failure.UPSTREAM, now=now, policy=policy
        )
        if after != breaker:
            self.store.set_breaker(upstream.name, after)
        opened = after.state is BreakerState.OPEN and breaker.state is not BreakerState.OPEN
        if key is None:
            return Outcome(failure, KeyState.READY, False, 0.0, opened)
        health = self.store.key(upstream.name, key.id)
        if failure is None or failure in (Failure.UPSTREAM, Failure.OTHER):
            new = after_success(health) if failure is None else health
        else:
            new = after_key_failure(
                health, failure, now=now, policy=policy, retry_after=retry_after, jitter=jitter
            )
        if new != health:
            self.store.set_key(upstream.name, key.id, new)
        state = new.state(now)
        return Outcome(failure, state, state is not health.state(now), new.remaining(now), opened)

    # -- weighted upstreams -----------------------------------------------------------------

    def order(
        self, model: str, upstreams: Sequence[UpstreamConfig], weights: Sequence[float]
    ) -> list[int]:
        """`strategy = weighted`: the indexes of `upstreams` in the order to try them. The first
        by the selection rule (requests in flight on the upstream's keys per unit of weight,
        then the pass; it is counted as chosen), the rest in the same order as failover."""
        weights = weights or [1.0] * len(upstreams)
        known = [load.passes for (m, _), load in self._routes.items() if m == model]
        floor = min(known, default=0.0)
        loads = [self._routes.setdefault((model, u.name), _Load(passes=floor)) for u in upstreams]
        entries = [
            (self._in_flight(upstream.name), load.passes, weight)
            for upstream, load, weight in zip(upstreams, loads, weights, strict=True)
        ]
        ranked = sorted(range(len(entries)), key=lambda i: _rank(entries, i))
        loads[ranked[0]].passes += 1 / weights[ranked[0]]
        return ranked

    def _in_flight(self, upstream: str) -> int:
        return sum(load.in_flight for (name, _), load in self._keys.items() if name == upstream)

    # -- views ------------------------------------------------------------------------------

    def view(self, upstream: UpstreamConfig, now: float) -> list[KeyView]:
        out = []
        for key in upstream.pool:
            health = self.store.key(upstream.name, key.id)
            load = self._keys.get((upstream.name, key.id))
            out.append(
                KeyView(
                    label=key.label,
                    weight=key.weight,
                    state=health.state(now).value,
                    in_flight=load.in_flight if load is not None else 0,
                    retry_in=health.remaining(now),
                    reason=health.reason if health.state(now) is not KeyState.READY else "",
                )
            )
        return out

    def health(self, upstream: UpstreamConfig, now: float) -> dict[str, Any]:
        """The upstream's keys and breaker for /health: labels, never keys."""
        keys = []
        for view in self.view(upstream, now):
            entry: dict[str, Any] = {
                "label": view.label,
                "weight": view.weight,
                "state": view.state,
                "in_flight": view.in_flight,
            }
            if view.state == KeyState.COOLING.value:
                entry["ready_in"] = round(view.retry_in, 3)
            if view.reason:
                entry["reason"] = view.reason
            keys.append(entry)
        state, wait, failures = self.breaker_view(upstream.name, now)
        breaker: dict[str, Any] = {"state": state, "failures_in_a_row": failures}
        if wait:
            breaker["closed_to_requests_for"] = round(wait, 3)
        return {"keys": keys, "breaker": breaker}

    def gauges(self, now: float) -> list[GaugeSample]:
        """The pools' state for /metrics, read now (`Metrics.add_collector`)."""
        if self._config is None:
            return []
        out = []
        states = [state.value for state in KeyState]
        for name, upstream in self._config.upstreams.items():
            if upstream.type == "demo":
                continue
            for view in self.view(upstream, now):
                labels = (("upstream", name), ("key", view.label))
                for state in states:
                    out.append(
                        GaugeSample(
                            "trioproxy_upstream_key_state",
                            "1 for the state each upstream key is in (ready, cooling, disabled).",
                            (*labels, ("state", state)),
                            1.0 if view.state == state else 0.0,
                        )
                    )
                out.append(
                    GaugeSample(
                        "trioproxy_upstream_key_in_flight",
                        "Requests in flight on each upstream key.",
                        labels,
                        view.in_flight,
                    )
                )
                if view.retry_in != math.inf:
                    out.append(
                        GaugeSample(
                            "trioproxy_upstream_key_cooldown_seconds",
                            "Seconds until a cooling upstream key is ready (0 when ready).",
                            labels,
                            round(view.retry_in, 3),
                        )
                    )
            state, _, _ = self.breaker_view(name, now)
            for value in (b.value for b in BreakerState):
                out.append(
                    GaugeSample(
                        "trioproxy_upstream_breaker_state",
                        "1 for the state of each upstream's circuit breaker.",
                        (("upstream", name), ("state", value)),
                        1.0 if state == value else 0.0,
                    )
                )
        return out

    def breaker_view(self, upstream: str, now: float) -> tuple[str, float, int]:
        """(state, seconds until it admits a request, failures in a row)."""
        breaker = self.store.breaker(upstream)
        return breaker.state.value, blocked_for(breaker, now) or 0.0, breaker.failures

    def _load(self, upstream: UpstreamConfig, key: UpstreamKey) -> _Load:
        where = (upstream.name, key.id)
        load = self._keys.get(where)
        if load is None:
            # A key new to the pool starts level with the others, not at 0: otherwise it would
            # take every request until its pass caught up.
            passes = [
                other.passes for (name, _), other in self._keys.items() if name == upstream.name
            ]
            load = self._keys[where] = _Load(passes=min(passes, default=0.0))
        return load
