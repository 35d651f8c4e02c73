"""Per-destination concurrency slots in Redis, shared by every worker (CONTRACT §2, isolation).

A destination may have `AAMDEST_DESTINATION_CONCURRENCY` flushes running at
once, over all workers and machines, so that a partner timing out on every
request holds at most that many worker threads and the others keep serving
other destinations.

Each destination's slots are a sorted set of holders scored by their expiry
(Redis server time, so machines' clocks need not agree). Acquire, renew and
release are Lua scripts, atomic in Redis. A holder that dies stops renewing and
its slot frees itself when its expiry passes.

The ramp (CONTRACT §7: a partner that has just recovered is not flooded): when a
circuit closes, `start_ramp` notes the moment in Redis. From then on the
destination may have `ramp_allowance` requests in flight: 1, doubling every
`RAMP_STEP_MS` (1, 2, 4, 8, …), until that reaches its full concurrency (every
slot holding a full claim), when the ramp ends. Flushes claim at most that many
requests a time, and take at most one slot per full claim's worth of it.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis
from django.conf import settings
from redis.commands.core import Script

from delivery.coordination import ramp_key, scheduling_client, slots_key
from destinations.models import Destination

# Keys are dropped when no holder renews them for this long past their expiry.
KEY_IDLE_MS = 60_000
# Added to a slot's expiry: covers the claim and the database writes around the sending.
SLOT_MARGIN_MS = 10_000

# KEYS[1]: the destination's set. ARGV: holder, expiry (ms), slot count, key idle time (ms).
_ACQUIRE = """
local now = redis.call('TIME')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[4]))
return 1
"""

# KEYS[1]: the destination's set. ARGV: holder, expiry (ms), key idle time (ms).
_RENEW = """
local now = redis.call('TIME')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expires or tonumber(expires) <= now_ms then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]))
return 1
"""

# KEYS[1]: the destination's ramp key. ARGV: how long the ramp lasts (ms).
_START_RAMP = """
local now = redis.call('TIME')
redis.call('SET', KEYS[1], now[1] * 1000 + math.floor(now[2] / 1000), 'PX', tonumber(ARGV[1]))
return 1
"""

# KEYS[1]: the destination's ramp key. Returns the ms since the ramp started, or -1 when none is on.
_RAMP_ELAPSED = """
local started = redis.call('GET', KEYS[1])
if not started then
  return -1
end
local now = redis.call('TIME')
return now[1] * 1000 + math.floor(now[2] / 1000) - tonumber(started)
"""

# Each step of the ramp doubles the requests a destination may have in flight.
RAMP_STEP_MS = 2_000

_RELEASE = """
return redis.call('ZREM', KEYS[1], ARGV[1])
"""


@functools.cache
def _script_for(client: redis.Redis, source: str) -> Script:
    return client.register_script(source)


def _script(source: str) -> Script:
    return _script_for(scheduling_client(), source)


def slot_expiry_ms(destination: Destination) -> int:
    """How long a flush may hold a slot between renewals: one claim sent with all its retries."""
    round_ms = destination.timeout_ms + destination.retry_delay_ms
    return round_ms * (destination.max_retries + 1) + SLOT_MARGIN_MS


def start_ramp(*, destination_id: int, full_requests: int) -> None:
    """Start the destination's ramp now (its circuit just closed); it ends at `full_requests` in flight."""
    steps = max(full_requests, 1).bit_length()
    _script(_START_RAMP)(keys=[ramp_key(destination_id)], args=[(steps + 1) * RAMP_STEP_MS])


def ramp_allowance(*, destination_id: int) -> int | None:
    """How many requests the destination may have in flight during its ramp; None when no ramp is on."""
    elapsed_ms = int(_script(_RAMP_ELAPSED)(keys=[ramp_key(destination_id)]))
    if elapsed_ms < 0:
        return None
    return allowance_after(elapsed_ms)


def allowance_after(elapsed_ms: int) -> int:
    """The ramp's requests in flight `elapsed_ms` after it started: 1, doubling every `RAMP_STEP_MS`."""
    return int(2 ** min(max(elapsed_ms, 0) // RAMP_STEP_MS, 30))


def acquire_slot(*, destination_id: int, expiry_ms: int, slot_count: int | None = None) -> str | None:
    """Take a slot of the destination for `expiry_ms`; return the holder token, or None if all are taken.

    `slot_count`: how many slots the destination has now (a ramp's); default, its full concurrency.
    """
    holder = uuid.uuid4().hex
    count = settings.AAMDEST_DESTINATION_CONCURRENCY if slot_count is None else slot_count
    taken = _script(_ACQUIRE)(keys=[slots_key(destination_id)], args=[holder, expiry_ms, count, KEY_IDLE_MS])
    return holder if taken else None


def renew_slot(*, destination_id: int, holder: str, expiry_ms: int) -> bool:
    """Extend `holder`'s slot by `expiry_ms` from now; False when it had expired (and may be reused)."""
    return bool(_script(_RENEW)(keys=[slots_key(destination_id)], args=[holder, expiry_ms, KEY_IDLE_MS]))


def release_slot(*, destination_id: int, holder: str) -> None:
    """Give the slot back (nothing happens when it had expired)."""
    _script(_RELEASE)(keys=[slots_key(destination_id)], args=[holder])


@contextmanager
def holding_slot(
    *, destination_id: int, expiry_ms: int, slot_count: int | None = None
) -> Iterator[Callable[[], bool] | None]:
    """Hold one of the destination's slots for the block and release it after.

    Yields a function that renews the slot and returns False when the slot was
    lost (it expired, and may be held by another flush now: the block must then
    stop sending), or None when every slot is held (the block then must not send).
    """
    holder = acquire_slot(destination_id=destination_id, expiry_ms=expiry_ms, slot_count=slot_count)
    if holder is None:
        yield None
        return

    def renew() -> bool:
        return renew_slot(destination_id=destination_id, holder=holder, expiry_ms=expiry_ms)

    try:
        yield renew
    finally:
        release_slot(destination_id=destination_id, holder=holder)

