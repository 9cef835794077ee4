"""Per-key limits shared by every instance, in Redis (or Valkey), through coredis.

Stage: the IO edge, behind `Limiter` (store/limiter.py). Imported only when `[proxy] store` is a
redis:// or rediss:// URL; coredis (the `redis` extra) runs on anyio, which runs under trio.

What lives in Redis, per client key NAME (under `store_prefix`, default "trioproxy:"):
- `{prefix}{NAME}:r`, a hash {tokens, ts}: the request-rate token bucket (burst = rpm, refilled at
  rpm per minute), the same bucket as trioproxy/limits.py. It expires once full again.
- `{prefix}{NAME}:c`, a sorted set of leases: one member per request in flight, scored by its
  expiry (ms). A slot is a lease of `LEASE_TTL` seconds; this instance renews the leases it holds
  every `LEASE_TTL / 3`, and deletes each one when its request ends. An instance that dies stops
  renewing, and its slots free themselves within `LEASE_TTL`.
- `{prefix}{NAME}:t`, a hash {tokens, ts}: the token-rate bucket (`tpm`, burst = tpm), the same
  bucket as trioproxy/limits.py. A request is admitted while it is above zero; the tokens a
  request used are debited when it ends, carried by the key's next admission on this instance
  (or sent by the background task after `RELEASE_DELAY`), so the bucket may go below zero.
The braces make the keys of a client key hash to one Redis Cluster slot, so one script may touch
them all (https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#hash-tags).

One request costs one round trip: `_ADMIT` checks and takes all three limits atomically (a Lua
script runs alone on the server:
https://redis.io/docs/latest/develop/interact/programmability/eval-intro/),
with the server's clock (`TIME`), so instances with skewed clocks agree. Releases, token debits
and renewals are batched by one background task, off the request path.

Failure: every request-path call is bounded by `store_timeout`; a timeout or an error marks the
store degraded (logged once, counted in /metrics), the request falls back to local limits, and
later requests skip the store until the background task's probe (`PING`, every
`PROBE_INTERVAL`) succeeds. On recovery the task re-writes the leases it holds (Redis may have
restarted empty) and flushes the releases it could not send.

Upstream key health and circuit breakers (store/health.py, when the `Runtime` asks for them with
`health_store()`) live in one hash, `{prefix}upstream-health`: a field per key (by upstream and
key fingerprint) and per upstream breaker, merged by the `_HEALTH` script, and a `version` field
bumped on every change. The background task runs that script whenever this instance changed an
entry and every `HEALTH_REFRESH` seconds: one round trip sends the changes and, when the version
moved, reads the whole (small) hash back. The hash expires `HEALTH_TTL` after the last instance
stopped refreshing it; entries that expired more than `HEALTH_GRACE` ago are dropped from it.

The background task is a trio system task started by the first request: the runtime that holds
this store is built outside any nursery (server, embedder, ASGI app), so the store owns its
connections' lifetime, and they end with the trio run (or `aclose()`).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import secrets
from typing import TYPE_CHECKING, Any

import coredis
import trio
from coredis.exceptions import NoScriptError
from coredis.retry import NoRetryPolicy

from trioproxy.limits import concurrency_limited, rate_limited, tokens_limited
from trioproxy.store.base import StoreUnavailable, store_location
from trioproxy.store.health import SharedHealth

if TYPE_CHECKING:
    from collections.abc import Sequence

    from coredis.connection import BaseConnection
    from coredis.typing import RedisValueT

    from trioproxy.config_types import ClientKey
    from trioproxy.metrics import Metrics

__all__ = ["HEALTH_REFRESH", "LEASE_TTL", "PROBE_INTERVAL", "RedisStore"]

logger = logging.getLogger("trioproxy.store")

# Seconds a concurrency slot outlives its instance's last renewal: the longest a crashed instance's
# requests keep counting against their key. Renewed every third of it, so two renewals can be lost
# (a Redis failover, a stalled event loop) before a live request's slot lapses.
LEASE_TTL = 30.0
# Seconds between probes of a degraded store: recovery is noticed within this.
PROBE_INTERVAL = 0.5
# Seconds the background task gives one batch (releases, renewals, a probe). Not on any request's
# path, so longer than store_timeout: a slow store still gets its releases.
BACKGROUND_TIMEOUT = 2.0
# Releases kept while the store is down (oldest dropped beyond it): each is one lease that would
# otherwise count until it expires, LEASE_TTL later, so dropping some is safe.
MAX_PENDING_RELEASES = 100_000
# Seconds a release waits before the background task sends it: the key's next admission on this
# instance carries it in its own round trip (a client's next request usually follows at once),
# so a request costs one round trip, not two. Other instances see the slot busy this much longer.
RELEASE_DELAY = 0.02
# Seconds between reads of the shared key health: a key another instance cooled down is skipped
# here within this (plus a round trip). A change made here is sent at once, not on this timer.
HEALTH_REFRESH = 0.1
# Seconds an expired cool-down (or a closed breaker's failure count) stays in the hash, and the
# hash's own lifetime after the last refresh of any instance.
HEALTH_GRACE = 600.0
HEALTH_TTL = 86_400.0

# The token-rate bucket (`tpm`), shared by _ADMIT and _DEBIT: refilled at tpm per minute up to
# tpm, less `debit` (tokens used by ended requests), which may take it below zero. Written only
# when something was debited (a refill alone is recomputed from `ts` the next time), and kept
# until it would be full again: a missing bucket is a full one.
_TOKEN_BUCKET = """
local function token_bucket(key, tpm, debit, now)
  local per_ms = tpm / 60000
  local bucket = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(bucket[1]) or tpm
  local ts = tonumber(bucket[2]) or now
  tokens = math.min(tpm, tokens + math.max(0, now - ts) * per_ms) - debit
  if debit > 0 then
    redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', now)
    redis.call('PEXPIRE', key, math.ceil((tpm - tokens) / per_ms) + 1000)
  end
  return tokens, per_ms
end
"""

# KEYS: rate bucket, lease set, token bucket. ARGV: rpm (0: none), max_concurrent (-1: none),
# lease id, lease TTL (ms), tpm (0: none), tokens to debit first, then leases of this key to
# release first (both carried from ended requests). Returns {0} when admitted, {1} at
# max_concurrent, {2, ms until a request token} when the request bucket is empty, {3, ms until
# the token bucket is above zero} when it is spent. Integers only: Redis truncates Lua numbers
# in replies. The token bucket is checked before the request bucket, so a request refused for
# its tokens does not spend a request.
_ADMIT = (
    _TOKEN_BUCKET
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local ttl = tonumber(ARGV[4])
local tpm = tonumber(ARGV[5])
local debit = tonumber(ARGV[6])
for i = 7, #ARGV do
  redis.call('ZREM', KEYS[2], ARGV[i])
end
local tokens, tokens_per_ms = 0, 0
if tpm > 0 then
  tokens, tokens_per_ms = token_bucket(KEYS[3], tpm, debit, now)
end
if cap >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= cap then
    return {1}
  end
end
if tpm > 0 and tokens <= 0 then
  return {3, math.max(1, math.ceil(-tokens / tokens_per_ms))}
end
if rpm > 0 then
  local per_ms = rpm / 60000
  local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
  local left = tonumber(bucket[1]) or rpm
  local ts = tonumber(bucket[2]) or now
  left = math.min(rpm, left + math.max(0, now - ts) * per_ms)
  if left < 1 then
    return {2, math.ceil((1 - left) / per_ms)}
  end
  redis.call('HSET', KEYS[1], 'tokens', tostring(left - 1), 'ts', now)
  redis.call('PEXPIRE', KEYS[1], 60000)
end
if cap >= 0 then
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {0}
"""
)

# KEYS: token buckets. ARGV: per key, its tpm and the tokens to debit.
_DEBIT = (
    _TOKEN_BUCKET
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  token_bucket(KEYS[i], tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i]), now)
end
return #KEYS
"""
)

# KEYS: lease sets. ARGV: lease TTL (ms), then per key: how many leases, the lease ids. Plain
# ZADD, not XX: a lease Redis lost (a restart) is written again.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local at = 2
for i = 1, #KEYS do
  local n = tonumber(ARGV[at])
  for j = at + 1, at + n do
    redis.call('ZADD', KEYS[i], now + ttl, ARGV[j])
  end
  redis.call('PEXPIRE', KEYS[i], ttl)
  at = at + n + 1
end
return #KEYS
"""

# KEYS: the health hash. ARGV: the version this instance last read, grace (ms), hash TTL (ms),
# then (op, field, value) triples from store/health.py: "k" merges a key's "ms-from-now strikes
# reason" (ms -1: disabled), "b" an upstream breaker's "state failures ms-from-now", "x" deletes
# a key's entry if it is disabled. Stored times are the server's ms (-1: disabled). Returns
# {version, server ms}, then field, value pairs when the version moved or something was sent.
_HEALTH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local known = tonumber(ARGV[1])
local grace = tonumber(ARGV[2])
local function words(s)
  local out = {}
  for w in string.gmatch(s, '%S+') do out[#out + 1] = w end
  return out
end
local function horizon(ms)
  if ms < 0 then return math.huge end
  return ms
end
local changed = false
for i = 4, #ARGV, 3 do
  local op, field, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old = redis.call('HGET', KEYS[1], field)
  local new = nil
  if op == 'x' then
    if old and tonumber(words(old)[1]) < 0 then
      redis.call('HDEL', KEYS[1], field)
      changed = true
    end
  elseif op == 'k' then
    local w = words(value)
    local left = tonumber(w[1])
    local u = -1
    if left >= 0 then u = now + left end
    new = u .. ' ' .. w[2] .. ' ' .. w[3]
    if old then
      local ou = tonumber(words(old)[1])
      -- latest until wins; an expired entry gives way to any newer one
      if not ((ou >= 0 and ou <= now) or horizon(u) > horizon(ou)) then new = nil end
    end
  elseif op == 'b' then
    local w = words(value)
    local u = 0
    if w[1] ~= 'closed' then u = now + tonumber(w[3]) end
    new = w[1] .. ' ' .. w[2] .. ' ' .. u
    if old then
      local o = words(old)
      if w[1] ~= 'closed' then
        -- open or probing wins over closed, and over open for less long
        if not (o[1] == 'closed' or u > tonumber(o[3])) then new = nil end
      elseif o[1] ~= 'closed' and tonumber(w[2]) > 0 then
        new = nil  -- a failure count does not close an open breaker; a success does
      end
    end
    if new == 'closed 0 0' then
      if old then
        redis.call('HDEL', KEYS[1], field)
        changed = true
      end
      new = nil
    end
  end
  if new and new ~= old then
    redis.call('HSET', KEYS[1], field, new)
    changed = true
  end
end
local version = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if changed then version = redis.call('HINCRBY', KEYS[1], 'version', 1) end
if version > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
local out = {version, now}
if version == known and #ARGV < 4 then return out end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local field, value = all[i], all[i + 1]
  if field ~= 'version' then
    local w = words(value)
    local stale = false
    if string.sub(field, 1, 5) == '["k",' then
      local u = tonumber(w[1])
      stale = u >= 0 and u + grace < now
    end
    if stale then
      redis.call('HDEL', KEYS[1], field)
    else
      out[#out + 1] = field
      out[#out + 1] = value
    end
  end
end
return out
"""

# KEYS and ARGV pair up: remove lease ARGV[i] from the set KEYS[i].
_RELEASE = """
for i = 1, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[i])
end
return #KEYS
"""


class RedisStore:
    """Per-key rate limits and concurrency leases in Redis, for every instance at once.

    Args:
        url: redis:// or rediss:// URL (with its password, if any).
        prefix: starts every key written.
        timeout: seconds a request waits for an answer before falling back.
        metrics: where failures are counted and the degraded state is shown.
        lease_ttl: seconds a concurrency slot outlives its instance (tests shorten it).
        health_refresh: seconds between reads of the shared key health.
    """

    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        timeout: float,
        metrics: Metrics,
        lease_ttl: float = LEASE_TTL,
        probe_interval: float = PROBE_INTERVAL,
        health_refresh: float = HEALTH_REFRESH,
    ) -> None:
        self.location = store_location(url)
        self._url = url
        self._prefix = prefix
        self._timeout = timeout
        self._metrics = metrics
        self._lease_ttl_ms = max(1, round(lease_ttl * 1000))
        self._renew_every = lease_ttl / 3
        self._probe_interval = probe_interval
        # Lease ids are unique across instances and restarts: a random instance id, a counter.
        self._instance = secrets.token_hex(6)
        self._serial = itertools.count()
        self._held: dict[str, set[str]] = {}  # lease-set key -> this instance's leases in it
        self._pending: dict[str, list[str]] = {}  # lease-set key -> leases to delete
        self._pending_count = 0
        self._debits: dict[str, tuple[int, int]] = {}  # token-bucket key -> (tpm, tokens)
        self._health: SharedHealth | None = None  # the key pools' health, once asked for
        self._health_key = f"{prefix}upstream-health"
        self._health_refresh = health_refresh
        self._degraded = False
        self._degraded_reason = ""
        self._client: _Client | None = None
        self._token: trio.lowlevel.TrioToken | None = None  # the trio run the task lives in
        self._ready = trio.Event()  # connected and scripts loaded
        self._stopped = trio.Event()
        self._wake = trio.Event()
        self._closed = trio.Event()
        metrics.set_store_degraded(False)

    @property
    def degraded(self) -> bool:
        return self._degraded

    @property
    def degraded_reason(self) -> str:
        return self._degraded_reason

    def leases_held(self) -> int:
        """Concurrency slots this instance holds in the store (requests it is running)."""
        return sum(len(leases) for leases in self._held.values())

    def health_store(self) -> SharedHealth:
        """The `HealthStore` for the key pools (routing/pool.py): upstream key cool-downs,
        disabled keys and circuit breakers shared by every instance on this store."""
        if self._health is None:
            self._health = SharedHealth(on_change=self._health_changed)
        return self._health

    def _health_changed(self) -> None:
        # Called by the router, synchronously: start the task if need be and let it publish.
        if self._closed.is_set():
            return  # closed in this run (the last requests ending): nothing to start again
        try:
            self._ensure_running()
        except RuntimeError:  # outside a trio run (building a runtime): sent when it starts
            return
        self._wake.set()

    # -- the request path ------------------------------------------------------------------

    async def admit(self, key: ClientKey) -> str:
        self._ensure_running()
        lease = f"{self._instance}:{next(self._serial)}" if key.max_concurrent is not None else ""
        keys = [self._key(key, "r"), self._key(key, "c"), self._key(key, "t")]
        carried = self._take_pending(keys[1])
        debit = self._debits.pop(keys[2], (0, 0))[1] if key.tpm is not None else 0
        args = [
            key.rpm if key.rpm is not None else 0,
            key.max_concurrent if key.max_concurrent is not None else -1,
            lease,
            self._lease_ttl_ms,
            key.tpm if key.tpm is not None else 0,
            debit,
            *carried,
        ]
        verdict = (-1, 0)
        with trio.move_on_after(self._timeout) as scope:
            try:
                if not self._ready.is_set():  # a set Event's wait() still costs a scheduler pass
                    await self._ready.wait()
                verdict = _verdict(await self._scripts().admit(keys, args))
            # Any failure of the store, whatever coredis or anyio raise for it, must end here
            # and in a local decision, never in a failed request (DESIGN.md: never a 500).
            except Exception as exc:
                self._put_back(keys[1], carried)
                self._put_back_debit(key, debit)
                self._fail("error", exc)
                raise StoreUnavailable(str(exc)) from exc
        if scope.cancelled_caught:
            # Deleting a lease twice is harmless; a debit the server may already have applied
            # is applied again, which errs towards the limit.
            self._put_back(keys[1], carried)
            self._put_back_debit(key, debit)
        if scope.cancelled_caught and not self._ready.is_set():
            # Still connecting (the first requests after start-up, unless `open()` was awaited):
            # local limits for this one; the start-up task reports a store that is really down.
            raise StoreUnavailable("the store is still connecting")
        if scope.cancelled_caught:
            # The script may still run on the server: its lease then expires unrenewed (it
            # was never recorded here), and a rate token is spent. Both are bounded.
            self._fail("timeout", None)
            raise StoreUnavailable(f"no answer within {self._timeout * 1000:g} ms")
        if verdict[0] == 1:
            raise concurrency_limited(key)
        if verdict[0] == 2:
            raise rate_limited(key, verdict[1] / 1000.0)
        if verdict[0] == 3:
            raise tokens_limited(key, verdict[1] / 1000.0)
        if lease:
            self._held.setdefault(keys[1], set()).add(lease)
        return lease

    def release(self, key: ClientKey, lease: str) -> None:
        set_key = self._key(key, "c")
        held = self._held.get(set_key)
        if held is not None:
            held.discard(lease)
            if not held:
                del self._held[set_key]
        if self._pending_count < MAX_PENDING_RELEASES:
            self._pending.setdefault(set_key, []).append(lease)
            self._pending_count += 1
        self._wake.set()

    def debit(self, key: ClientKey, tokens: int) -> None:
        if key.tpm is None or tokens <= 0:
            return
        self._put_back_debit(key, tokens)
        self._wake.set()

    async def aclose(self) -> None:
        """Flush what can be flushed within BACKGROUND_TIMEOUT and close the connections."""
        self._closed.set()
        self._wake.set()
        if self._token is not None:
            with trio.move_on_after(BACKGROUND_TIMEOUT + 1):
                await self._stopped.wait()

    # -- the background task -----------------------------------------------------------------

    def _take_pending(self, set_key: str) -> list[str]:
        leases = self._pending.pop(set_key, [])
        self._pending_count -= len(leases)
        return leases

    def _put_back(self, set_key: str, leases: list[str]) -> None:
        if leases:
            self._pending.setdefault(set_key, [])[:0] = leases
            self._pending_count += len(leases)

    def _put_back_debit(self, key: ClientKey, tokens: int) -> None:
        """Add `tokens` to what waits to be debited from `key`'s bucket (one sum per key, so
        debits kept while the store is down take no more room than the keys)."""
        if key.tpm is None or tokens <= 0:
            return
        bucket = self._key(key, "t")
        self._debits[bucket] = (key.tpm, self._debits.get(bucket, (0, 0))[1] + tokens)

    def _key(self, key: ClientKey, kind: str) -> str:
        return f"{self._prefix}{{{key.name}}}:{kind}"

    def _ensure_running(self) -> None:
        token = trio.lowlevel.current_trio_token()
        if self._token is token:
            return
        # First use, or a new trio run (a runtime reused across runs): start over in this one.
        self._token = token
        self._ready = trio.Event()  # connected and scripts loaded
        self._stopped = trio.Event()
        self._wake = trio.Event()
        self._closed = trio.Event()
        redis: coredis.Redis[bytes] = coredis.Redis.from_url(
            self._url,
            retry_policy=NoRetryPolicy(),  # a retry would outlast store_timeout; we fall back
            verify_version=False,  # saves a round trip; scripts need Redis >= 5 (docs)
            connect_timeout=BACKGROUND_TIMEOUT,
        )
        client = _Client(redis)
        self._client = client
        trio.lowlevel.spawn_system_task(self._run, client, token, name="trioproxy store")

    def _scripts(self) -> _Client:
        assert self._client is not None  # set by _ensure_running
        return self._client

    async def _run(self, client: _Client, token: trio.lowlevel.TrioToken) -> None:
        try:
            async with client.redis:
                await self._warm_up(client)
                await self._maintain()
        # A system task's exception would crash the whole trio run: log it, go local.
        except Exception as exc:
            self._fail("error", exc)
            logger.exception("shared store task stopped; limits stay local until restart")
        finally:
            self._stopped.set()
            if self._token is token:
                self._token = None

    async def _warm_up(self, client: _Client) -> None:
        """Connect and load the scripts, so the first request costs one round trip. A store
        that is down now is degraded now; the probe brings it back."""
        try:
            with trio.fail_after(BACKGROUND_TIMEOUT):
                await client.redis.ping()
                for script in client.scripts:
                    await client.redis.script_load(script.script)
        except trio.TooSlowError as exc:
            self._fail("timeout", exc)
        except Exception as exc:  # as in admit: any store failure means "unavailable"
            self._fail("error", exc)
        self._ready.set()

    async def open(self) -> bool:
        """Start the background task and wait (up to BACKGROUND_TIMEOUT) until the store is
        connected; True if it answers. Optional: the first request starts it otherwise."""
        self._ensure_running()
        with trio.move_on_after(BACKGROUND_TIMEOUT + 1):
            await self._ready.wait()
        return self._ready.is_set() and not self._degraded

    async def _maintain(self) -> None:
        next_renew = trio.current_time() + self._renew_every
        next_sync = trio.current_time()  # read the shared health at once
        while not self._closed.is_set():
            wake_at = next_renew
            if self._health is not None:
                wake_at = min(wake_at, next_sync)
            if self._degraded:
                wake_at = min(wake_at, trio.current_time() + self._probe_interval)
            health_dirty = self._health is not None and self._health.dirty
            if not (self._pending or self._debits or health_dirty) or self._degraded:
                with trio.move_on_at(wake_at):
                    await self._wake.wait()
            self._wake = trio.Event()
            settling = self._pending or self._debits
            if settling and not self._degraded and not self._closed.is_set():
                await trio.sleep(RELEASE_DELAY)  # a next admission may carry them
            now = trio.current_time()
            renew = now >= next_renew or self._degraded
            sync = self._health is not None and (
                now >= next_sync or self._health.dirty or self._degraded
            )
            if await self._background(renew=renew, sync=sync):
                if renew:
                    next_renew = trio.current_time() + self._renew_every
                if sync:
                    next_sync = trio.current_time() + self._health_refresh
        with trio.CancelScope(shield=True):
            await self._background(
                renew=False, sync=self._health is not None and self._health.dirty
            )

    async def _background(self, *, renew: bool, sync: bool = False) -> bool:
        """One batch: probe if degraded, releases, renewals, the shared health (`sync`). True
        if the store answered."""
        batch = [(k, m) for k in list(self._pending) for m in self._take_pending(k)]
        debits, self._debits = self._debits, {}
        try:
            with trio.fail_after(BACKGROUND_TIMEOUT):
                client = self._scripts()
                if self._degraded:
                    await client.redis.ping()
                    for script in client.scripts:
                        await client.redis.script_load(script.script)  # Redis may be new
                    if self._health is not None:
                        self._health.republish()
                if batch:
                    await client.release([k for k, _ in batch], [m for _, m in batch])
                    batch = []
                if debits:
                    await client.debit(list(debits), [n for pair in debits.values() for n in pair])
                    debits = {}
                if renew and self._held:
                    args: list[str | int] = [self._lease_ttl_ms]
                    for leases in self._held.values():
                        args += [len(leases), *leases]
                    await client.renew(list(self._held), args)
                if sync:
                    await self._sync_health(client)
        except trio.TooSlowError as exc:
            self._requeue(batch, debits)
            self._fail("timeout", exc)
            return False
        except Exception as exc:  # as in admit: any store failure means "unavailable"
            self._requeue(batch, debits)
            self._fail("error", exc)
            return False
        if self._degraded:
            self._recover()
        return True

    async def _sync_health(self, client: _Client) -> None:
        """One round trip: send this instance's health changes, read back the merged state."""
        health = self._health
        if health is None:
            return
        args, taken = health.changes(trio.current_time())
        try:
            reply: Any = await client.health(
                [self._health_key],
                [
                    health.version,
                    round(HEALTH_GRACE * 1000),
                    round(HEALTH_TTL * 1000),
                    *args,
                ],
            )
            health.apply(reply, now=trio.current_time(), taken=taken)
        except BaseException:
            health.restore(taken)
            raise

    def _requeue(self, batch: list[tuple[str, str]], debits: dict[str, tuple[int, int]]) -> None:
        """Keep what a failed batch did not deliver (a release or debit that timed out may
        have landed: deleting twice is harmless, debiting twice errs towards the limit)."""
        for set_key, lease in batch:
            self._put_back(set_key, [lease])
        for bucket, (tpm, tokens) in debits.items():
            self._debits[bucket] = (tpm, self._debits.get(bucket, (0, 0))[1] + tokens)

    # -- state -----------------------------------------------------------------------------

    def _fail(self, reason: str, exc: BaseException | None) -> None:
        self._metrics.store_failure(reason)
        if self._degraded:
            return
        self._degraded = True
        detail = "no answer in time" if reason == "timeout" else f"{type(exc).__name__}: {exc}"
        self._degraded_reason = detail
        self._metrics.set_store_degraded(True)
        logger.warning(
            "shared store %s unavailable (%s): each instance enforces its own limits until it "
            "answers again",
            self.location,
            detail,
        )
        self._wake.set()  # start probing now

    def _recover(self) -> None:
        self._degraded = False
        self._degraded_reason = ""
        self._metrics.set_store_degraded(False)
        logger.warning("shared store %s answers again: limits are shared again", self.location)


class _Client:
    """A coredis client and this store's scripts, each sent as EVALSHA on one connection.

    Each admission pays for every layer between its `await` and the socket, and coredis's command
    API has many: `Script.__call__` wraps EVALSHA in three command objects (retry, transform),
    `Redis.execute_command` adds a retry policy, a telemetry span and client-cache checks, and
    leases a pool connection per command, whose lock costs a pass of the trio scheduler. So a
    script goes straight to a connection as a request (`BaseConnection.create_request`, public:
    https://coredis.readthedocs.io/en/stable/api/connections.html), one taken from the pool
    once and reused while it is usable. bench/store_profile.py measures the difference.

    That connection is released to the pool at once, as `execute_command` itself does as soon as
    a command is queued: coredis multiplexes requests on a connection (replies are matched in
    order), so the background task's PING and SCRIPT LOAD may share it, and the pool still owns
    it: one that dies is replaced there (not leaked), and the next call takes another.

    A script missing on the server (a restarted or flushed Redis: NOSCRIPT) is run once more with
    EVAL, which also caches it for the next EVALSHA, "exactly like" SCRIPT LOAD would
    (https://redis.io/docs/latest/commands/script-load/): one round trip, not two.
    """

    def __init__(self, redis: coredis.Redis[bytes]) -> None:
        self.redis = redis
        self._connection: BaseConnection | None = None
        self.admit = _Script(self, _ADMIT)
        self.renew = _Script(self, _RENEW)
        self.release = _Script(self, _RELEASE)
        self.debit = _Script(self, _DEBIT)
        self.health = _Script(self, _HEALTH)
        self.scripts = (self.admit, self.renew, self.release, self.debit, self.health)

    async def connection(self) -> BaseConnection:
        """The connection scripts are sent on: the same one while it is usable."""
        connection = self._connection
        if connection is None or not connection.usable:
            pool = self.redis.connection_pool
            connection = await pool.get_connection()
            pool.release(connection)  # still ours to send on: see the class's docstring
            self._connection = connection
        return connection


class _Script:
    """One Lua script of the store: `await script(keys, args)` runs it and returns Redis's
    reply as RESP3 decodes it (bytes, ints, lists), as coredis's `Script` did."""

    def __init__(self, client: _Client, script: str) -> None:
        self.client = client
        self.script = script  # for SCRIPT LOAD
        self.sha = hashlib.sha1(script.encode()).hexdigest()  # Redis's name for it

    async def __call__(self, keys: Sequence[str], args: Sequence[RedisValueT]) -> Any:
        connection = await self.client.connection()
        try:
            return await connection.create_request(b"EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            connection = await self.client.connection()
            return await connection.create_request(b"EVAL", self.script, len(keys), *keys, *args)


def _verdict(reply: Any) -> tuple[int, int]:
    """The admit script's reply as (code, ms to wait)."""
    if isinstance(reply, list | tuple) and reply and all(isinstance(x, int) for x in reply):
        return int(reply[0]), int(reply[1]) if len(reply) > 1 else 0
    raise StoreUnavailable(f"unexpected reply from the admit script: {reply!r}")
