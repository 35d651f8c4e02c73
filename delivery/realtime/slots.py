"""Per-destination concurrency slots in Redis, shared by every worker (CONTRACT §2, isolation).

A destination may have `AAMDEST_DESTINATION_CONCURRENCY` flushes running at
once, over all workers and machines, so that a partner timing out on every
request holds at most that many worker threads and the others keep serving
other destinations.

Each destination's slots are a sorted set of holders scored by their expiry
(Redis server time, so machines' clocks need not agree). Acquire, renew and
release are Lua scripts, atomic in Redis. A holder that dies stops renewing and
its slot frees itself when its expiry passes.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis
from django.conf import settings
from redis.commands.core import Script

from delivery.coordination import scheduling_client, slots_key
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


def acquire_slot(*, destination_id: int, expiry_ms: int) -> str | None:
    """Take a slot of the destination for `expiry_ms`; return the holder token, or None if all are taken."""
    holder = uuid.uuid4().hex
    taken = _script(_ACQUIRE)(
        keys=[slots_key(destination_id)],
        args=[holder, expiry_ms, settings.AAMDEST_DESTINATION_CONCURRENCY, KEY_IDLE_MS],
    )
    return holder if taken else None


def renew_slot(*, destination_id: int, holder: str, expiry_ms: int) -> bool:
    """Extend `holder`'s slot by `expiry_ms` from now; False when it had expired (and may be reused)."""
    return bool(_script(_RENEW)(keys=[slots_key(destination_id)], args=[holder, expiry_ms, KEY_IDLE_MS]))


def release_slot(*, destination_id: int, holder: str) -> None:
    """Give the slot back (nothing happens when it had expired)."""
    _script(_RELEASE)(keys=[slots_key(destination_id)], args=[holder])


@contextmanager
def holding_slot(*, destination_id: int, expiry_ms: int) -> Iterator[Callable[[], bool] | None]:
    """Hold one of the destination's slots for the block and release it after.

    Yields a function that renews the slot and returns False when the slot was
    lost (it expired, and may be held by another flush now: the block must then
    stop sending), or None when every slot is held (the block then must not send).
    """
    holder = acquire_slot(destination_id=destination_id, expiry_ms=expiry_ms)
    if holder is None:
        yield None
        return

    def renew() -> bool:
        return renew_slot(destination_id=destination_id, holder=holder, expiry_ms=expiry_ms)

    try:
        yield renew
    finally:
        release_slot(destination_id=destination_id, holder=holder)

