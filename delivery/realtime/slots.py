"""Per-destination concurrency slots in Redis, shared by every worker (SPEC §2, isolation).

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

# Keys are dropped when no holder renews them for this long past their expiry.
KEY_IDLE_MS = 60_000

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
def _client_for(url: str) -> redis.Redis:
    # One client (and connection pool, thread-safe) per URL and process.
    return redis.Redis.from_url(url)


def redis_client() -> redis.Redis:
    """The Redis holding slots and flush wake-ups (`AAMDEST_REDIS_URL`, the broker's by default)."""
    return _client_for(settings.AAMDEST_REDIS_URL)


@functools.cache
def _script_for(url: str, source: str) -> Script:
    return _client_for(url).register_script(source)


def _script(source: str) -> Script:
    return _script_for(settings.AAMDEST_REDIS_URL, source)


def _key(destination_id: int) -> str:
    return f"aamdest:slots:{destination_id}"


def acquire_slot(*, destination_id: int, expiry_ms: int) -> str | None:
    """Take a slot of the destination for `expiry_ms`; return the holder token, or None if all are taken."""
    holder = uuid.uuid4().hex
    taken = _script(_ACQUIRE)(
        keys=[_key(destination_id)],
        args=[holder, expiry_ms, settings.AAMDEST_DESTINATION_CONCURRENCY, KEY_IDLE_MS],
    )
    return holder if taken else None


def renew_slot(*, destination_id: int, holder: str, expiry_ms: int) -> bool:
    """Extend `holder`'s slot by `expiry_ms` from now; False when it had expired (and may be reused)."""
    return bool(_script(_RENEW)(keys=[_key(destination_id)], args=[holder, expiry_ms, KEY_IDLE_MS]))


def release_slot(*, destination_id: int, holder: str) -> None:
    """Give the slot back (nothing happens when it had expired)."""
    _script(_RELEASE)(keys=[_key(destination_id)], args=[holder])


@contextmanager
def holding_slot(*, destination_id: int, expiry_ms: int) -> Iterator[Callable[[], None] | None]:
    """Hold one of the destination's slots for the block and release it after.

    Yields a function that renews the slot, or None when every slot is held (the
    block then must not send).
    """
    holder = acquire_slot(destination_id=destination_id, expiry_ms=expiry_ms)
    if holder is None:
        yield None
        return

    def renew() -> None:
        renew_slot(destination_id=destination_id, holder=holder, expiry_ms=expiry_ms)

    try:
        yield renew
    finally:
        release_slot(destination_id=destination_id, holder=holder)


def slot_holders(*, destination_id: int) -> int:
    """Return how many slots of the destination are held now (expired holders not counted)."""
    client = redis_client()
    now_seconds, now_micros = client.time()
    now_ms = now_seconds * 1000 + now_micros // 1000
    return int(client.zcount(_key(destination_id), f"({now_ms}", "+inf"))
