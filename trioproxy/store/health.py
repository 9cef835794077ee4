"""Upstream key health and circuit breakers seen by every instance, through the shared store.

Stage: the IO edge, held by the `Runtime`'s `KeyPools` as its `HealthStore` when `[proxy] store`
is Redis (routing/pool.py defines the interface). This module does no IO and reads no clock: the
Redis store's background task (store/redis.py) calls `changes()` before and `apply()` after its
one round trip, passing trio's clock.

Theory of operation:
- **The router never waits.** `key()`, `breaker()` and the setters work on this instance's own
  copy, synchronously, exactly like `MemoryStore`. A setter marks the entry changed and wakes the
  background task (`on_change`), which publishes it at once; it also re-reads Redis every
  `HEALTH_REFRESH` seconds (store/redis.py). So a key another instance saw rate-limited is
  skipped here within about `HEALTH_REFRESH` plus a round trip, and never by a request waiting.
- **Merging** happens in Redis, atomically (the `_HEALTH` script in store/redis.py):
  a key's latest `until` wins (a cool-down is never shortened by a stale copy; a disabled key,
  `until` = inf, stays disabled), and an expired entry is replaced by any newer one (its strikes);
  a breaker that is open or probing wins over a closed one and over one open for less long; a
  closed breaker wins only when it was closed by a success (failures = 0), i.e. the upstream
  answered after it was opened somewhere. After each round trip Redis's merged state replaces
  this copy, except for entries changed here meanwhile (they go out with the next round trip).
- **Times.** Redis keeps times on its own clock (`TIME`), like the limits: an entry goes out as
  "milliseconds from now" and comes back as "milliseconds from the server's now", converted to
  trio's clock on arrival. Clock skew between hosts therefore does not matter, and the engine
  keeps its monotonic clock.
- **A reload** re-enables this instance's disabled keys (401/403: "disabled until the next
  reload") and deletes them in Redis if they are still disabled there, so a reload of any
  instance re-enables a key for all; a cool-down stands. Keys and upstreams the configuration no
  longer lists are forgotten here, and left to expire in Redis.
- **Redis down**: nothing is sent or read; every instance keeps using its own copy, learning
  from its own answers (as with `store = memory`). On recovery (or a Redis found empty) this
  instance publishes everything it holds, and the merge rules decide.

Keys are named in Redis by upstream name and key fingerprint (`UpstreamKey.id`), never by the key.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from trioproxy.routing.health import Breaker, BreakerState, KeyHealth

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["SharedHealth"]

_READY = KeyHealth()
_CLOSED = Breaker()

# What a changed entry asks of Redis (the script's op codes).
_KEY = "k"  # merge this key's health
_BREAKER = "b"  # merge this upstream's breaker
_CLEAR = "x"  # a reload: delete the key's entry if it is still disabled


class SharedHealth:
    """A `HealthStore` (routing/pool.py) whose entries every instance shares through the store.

    Args:
        on_change: called (synchronously, in the router's task) after each change, to wake the
            task that publishes it.
    """

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._keys: dict[tuple[str, str], KeyHealth] = {}
        self._breakers: dict[str, Breaker] = {}
        self._dirty: dict[str, str] = {}  # field -> op (_KEY, _BREAKER, _CLEAR) to send
        self._keep: tuple[set[tuple[str, str]], set[str]] | None = None  # the last `retain`
        self.version = -1  # Redis's version of the state last read; -1: never read
        self._on_change = on_change

    # -- HealthStore --------------------------------------------------------------------------

    def key(self, upstream: str, key_id: str) -> KeyHealth:
        return self._keys.get((upstream, key_id)) or _READY

    def set_key(self, upstream: str, key_id: str, health: KeyHealth) -> None:
        if health == _READY:
            self._keys.pop((upstream, key_id), None)
        else:
            self._keys[(upstream, key_id)] = health
        self._changed(_key_field(upstream, key_id), _KEY)

    def breaker(self, upstream: str) -> Breaker:
        return self._breakers.get(upstream) or _CLOSED

    def set_breaker(self, upstream: str, breaker: Breaker) -> None:
        if breaker == _CLOSED:
            self._breakers.pop(upstream, None)
        else:
            self._breakers[upstream] = breaker
        self._changed(_breaker_field(upstream), _BREAKER)

    def retain(self, keys: set[tuple[str, str]], upstreams: set[str]) -> None:
        self._keep = (set(keys), set(upstreams))
        cleared = False
        for where, health in list(self._keys.items()):
            if where not in keys:
                del self._keys[where]
                self._dirty.pop(_key_field(*where), None)
            elif health.until == math.inf:
                del self._keys[where]
                self._dirty[_key_field(*where)] = _CLEAR
                cleared = True
        for name in list(self._breakers):
            if name not in upstreams:
                del self._breakers[name]
                self._dirty.pop(_breaker_field(name), None)
        if cleared:
            self._wake()

    # -- the background task's side -----------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """Whether changes wait to be published."""
        return bool(self._dirty)

    def changes(self, now: float) -> tuple[list[str], dict[str, str]]:
        """The changed entries as the script's arguments (op, field, value triples), and the
        fields taken (give them to `apply`, or to `restore` if the round trip failed)."""
        taken, self._dirty = self._dirty, {}
        args: list[str] = []
        for field, op in taken.items():
            _, upstream, name = json.loads(field)
            if op == _KEY:
                value = _encode_key(self._keys.get((upstream, name)) or _READY, now)
            elif op == _BREAKER:
                value = _encode_breaker(self._breakers.get(upstream) or _CLOSED, now)
            else:
                value = ""
            args += [op, field, value]
        return args, taken

    def restore(self, taken: dict[str, str]) -> None:
        """The round trip carrying `taken` failed: send them again later (unless changed since)."""
        for field, op in taken.items():
            self._dirty.setdefault(field, op)

    def republish(self) -> None:
        """Send everything held here with the next round trip (Redis came back, maybe empty)."""
        for upstream, key_id in self._keys:
            self._dirty.setdefault(_key_field(upstream, key_id), _KEY)
        for upstream in self._breakers:
            self._dirty.setdefault(_breaker_field(upstream), _BREAKER)
        self.version = -1

    def apply(self, reply: Any, *, now: float, taken: dict[str, str]) -> None:
        """Adopt Redis's merged state from the script's reply: [version, server ms, then field,
        value pairs] (no pairs when nothing changed since `version` and nothing was sent).
        `now` is trio's clock when the reply arrived."""
        if not isinstance(reply, list | tuple) or len(reply) < 2:
            raise ValueError(f"unexpected reply from the health script: {reply!r}")
        version, server_now = int(reply[0]), int(reply[1])
        if version < self.version:
            # Redis lost the state (a restart without persistence, the entry expired): what this
            # instance holds goes back, and the next round trip reads the result.
            self.republish()
            return
        if version == self.version and not taken:
            return
        self.version = version
        keys: dict[tuple[str, str], KeyHealth] = {}
        breakers: dict[str, Breaker] = {}
        pairs = reply[2:]
        for raw_field, raw_value in zip(pairs[::2], pairs[1::2], strict=True):
            field, value = _text(raw_field), _text(raw_value)
            kind, upstream, name = json.loads(field)
            if kind == _KEY and self._kept_key(upstream, name):
                health = _decode_key(value, now, server_now)
                if health != _READY:
                    keys[(upstream, name)] = health
            elif kind == _BREAKER and self._kept_upstream(upstream):
                breaker = _decode_breaker(value, now, server_now)
                if breaker != _CLOSED:
                    breakers[upstream] = breaker
        # Entries changed here while the round trip was out keep this instance's value: it goes
        # out next, and the merged result comes back then.
        for field in self._dirty:
            kind, upstream, name = json.loads(field)
            if kind == _KEY:
                where = (upstream, name)
                keys.pop(where, None)
                if where in self._keys:
                    keys[where] = self._keys[where]
            else:
                breakers.pop(upstream, None)
                if upstream in self._breakers:
                    breakers[upstream] = self._breakers[upstream]
        self._keys, self._breakers = keys, breakers

    # -- helpers ------------------------------------------------------------------------------

    def _changed(self, field: str, op: str) -> None:
        self._dirty[field] = op
        self._wake()

    def _wake(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def _kept_key(self, upstream: str, key_id: str) -> bool:
        return self._keep is None or (upstream, key_id) in self._keep[0]

    def _kept_upstream(self, upstream: str) -> bool:
        return self._keep is None or upstream in self._keep[1]


def _key_field(upstream: str, key_id: str) -> str:
    return json.dumps([_KEY, upstream, key_id])


def _breaker_field(upstream: str) -> str:
    return json.dumps([_BREAKER, upstream, ""])


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _ms_left(until: float, now: float) -> int:
    return max(0, math.ceil((until - now) * 1000))


# Values, space-separated words the script parses. A key: "ms strikes reason", ms -1 when disabled
# ("until" on the server's clock in Redis, "ms from now" on the way in); reason "-" when empty.
# A breaker: "state failures ms".


def _encode_key(health: KeyHealth, now: float) -> str:
    left = -1 if health.until == math.inf else _ms_left(health.until, now)
    return f"{left} {health.strikes} {health.reason or '-'}"


def _decode_key(value: str, now: float, server_now: int) -> KeyHealth:
    until_ms, strikes, reason = value.split()
    until = math.inf if int(until_ms) < 0 else now + (int(until_ms) - server_now) / 1000
    return KeyHealth(until=until, reason="" if reason == "-" else reason, strikes=int(strikes))


def _encode_breaker(breaker: Breaker, now: float) -> str:
    left = 0 if breaker.state is BreakerState.CLOSED else _ms_left(breaker.until, now)
    return f"{breaker.state.value} {breaker.failures} {left}"


def _decode_breaker(value: str, now: float, server_now: int) -> Breaker:
    state, failures, until_ms = value.split()
    until = 0.0 if state == BreakerState.CLOSED.value else now + (int(until_ms) - server_now) / 1000
    return Breaker(BreakerState(state), int(failures), until)
