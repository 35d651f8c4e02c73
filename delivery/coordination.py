"""Redis coordination: the one place that opens Redis clients and spells Redis keys.

Every Redis use has its own named client, each with deadlines that fit it (a
socket connect timeout and a read timeout), so that a stuck Redis holds up
nothing for longer than that use can afford:

- `scheduling_client`: concurrency slots, queued flushes, wake-up timers and
  the one-send-per-delivery guard (`delivery.realtime`);
- `token_cache_client`: the shared OAuth token cache, its lock and its error
  notes (`delivery.sending.tokens`): each call within what is left of the attempt;
- `counters_client`: the /metrics counters (`delivery.counters`): shortest,
  counting never holds up ingestion or a token fetch;
- `maintenance_client`: one-off commands (`rotate_encryption_keys`);
- `probe_client`: a fresh client for one health probe of a URL, closed by its caller.

Each key builder below is the only spelling of its key: callers (tests
included) build keys here instead of re-declaring their format.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import redis
from django.conf import settings

PREFIX = "aamdest"


@dataclass(frozen=True)
class Deadlines:
    """How long a client waits to connect and for an answer, in seconds."""

    connect_s: float
    read_s: float


# A flush and a task wait on these between sends: a short stall is tolerated, a hung Redis is not.
SCHEDULING = Deadlines(connect_s=2.0, read_s=5.0)
# Inside an attempt's deadline: a stuck Redis must not hold an attempt past it for long.
TOKEN_CACHE = Deadlines(connect_s=1.0, read_s=2.0)
# The deadlines a token-cache call within an attempt may get (`token_cache_client(within_ms=…)`), in s.
TOKEN_CACHE_STEPS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
# Best effort: counting must never hold up ingestion or a token fetch.
COUNTERS = Deadlines(connect_s=0.5, read_s=0.5)
# An operator's command: patient.
MAINTENANCE = Deadlines(connect_s=5.0, read_s=5.0)
# A monitoring probe must answer fast even when Redis is unreachable (a dropped SYN
# would otherwise wait for the kernel's connect timeout).
PROBE = Deadlines(connect_s=1.0, read_s=1.0)


@functools.cache
def _client_for(url: str, deadlines: Deadlines) -> redis.Redis:
    # One client (and connection pool, thread-safe) per URL, use and process.
    return redis.Redis.from_url(
        url, socket_connect_timeout=deadlines.connect_s, socket_timeout=deadlines.read_s
    )


def scheduling_client() -> redis.Redis:
    """Slots, flush queueing, wake-up timers, send guards (`AAMDEST_REDIS_URL`, the broker's by default)."""
    return _client_for(settings.AAMDEST_REDIS_URL, SCHEDULING)


def token_cache_client(*, within_ms: int | None = None) -> redis.Redis:
    """The shared OAuth token cache; with `within_ms`, a client whose calls each end within it.

    Such a call waits at most half of `within_ms` to connect and half for the answer (never
    more than `TOKEN_CACHE`), so that a stuck Redis leaves the attempt time to ask the token
    endpoint directly.
    """
    if within_ms is None:
        return _client_for(settings.AAMDEST_REDIS_URL, TOKEN_CACHE)
    half_s = within_ms / 2000
    # Rounded down to a few steps, so that a process keeps a handful of clients, not one per ms.
    step_s = max((step for step in TOKEN_CACHE_STEPS_S if step <= half_s), default=TOKEN_CACHE_STEPS_S[0])
    connect_s, read_s = min(step_s, TOKEN_CACHE.connect_s), min(step_s, TOKEN_CACHE.read_s)
    return _client_for(settings.AAMDEST_REDIS_URL, Deadlines(connect_s=connect_s, read_s=read_s))


def counters_client() -> redis.Redis:
    """The /metrics counters."""
    return _client_for(settings.AAMDEST_REDIS_URL, COUNTERS)


def maintenance_client() -> redis.Redis:
    """Management commands working through Redis."""
    return _client_for(settings.AAMDEST_REDIS_URL, MAINTENANCE)


def beat_client() -> redis.Redis:
    """Beat's and workers' heartbeats: short deadlines, so a probe or a tick never hangs on Redis."""
    return _client_for(settings.AAMDEST_REDIS_URL, PROBE)


# Delete KEYS[1] only if it still holds ARGV[1] (a lock, a guard, a lease released by its owner).
DELETE_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def delete_if_held(client: redis.Redis, *, key: str, holder: str) -> bool:
    """Delete `key` if its value is still `holder`; True when it did. Raises redis.RedisError."""
    return bool(client.eval(DELETE_IF_HELD, 1, key, holder))


def probe_client(url: str) -> redis.Redis:
    """A new client for one probe of `url`; the caller closes it. Raises ValueError for a malformed URL."""
    return redis.Redis.from_url(url, socket_connect_timeout=PROBE.connect_s, socket_timeout=PROBE.read_s)


# ---- keys -------------------------------------------------------------------------------------


def slots_key(destination_id: int) -> str:
    """The sorted set of a destination's concurrency slot holders (`delivery.realtime.slots`)."""
    return f"{PREFIX}:slots:{destination_id}"


def ramp_key(destination_id: int) -> str:
    """When the destination's circuit last closed (Redis time, ms), while its ramp lasts (slots)."""
    return f"{PREFIX}:ramp:{destination_id}"


def flush_queued_key(destination_id: int) -> str:
    """Set while a flush of the destination is queued and not yet started."""
    return f"{PREFIX}:flush-queued:{destination_id}"


def flush_timer_key(destination_id: int) -> str:
    """Set while a wake-up flush of the destination is scheduled; expires as it fires."""
    return f"{PREFIX}:flush-timer:{destination_id}"


def sending_guard_key(delivery_id: int) -> str:
    """Set while one task sends the delivery, so that a duplicate task does not send alongside."""
    return f"{PREFIX}:sending:{delivery_id}"


# The token cache's keys all start so; the cache entries are hashes, the lock and error keys strings.
BEAT_LEADER_KEY = f"{PREFIX}:beat:leader"
BEAT_TICK_KEY = f"{PREFIX}:beat:last-tick"
# Every worker's heartbeat (`delivery.observability.worker_heartbeat`).
WORKER_HEARTBEAT_PATTERN = f"{PREFIX}:worker:*"


def worker_heartbeat_key(hostname: str) -> str:
    """A worker's heartbeat, by its node name (`celery worker --hostname`, e.g. `celery@web-1`)."""
    return f"{PREFIX}:worker:{hostname}"


TOKEN_CACHE_PATTERN = f"{PREFIX}:oauth-token:*"


def token_cache_key(*, destination_id: int, fingerprint: str) -> str:
    """The hash caching a destination's OAuth token under one credentials fingerprint."""
    return f"{PREFIX}:oauth-token:{destination_id}:{fingerprint}"


def token_lock_key(cache_key: str) -> str:
    """The single-flight lock of one token cache entry."""
    return f"{cache_key}:lock"


def token_error_key(*, lock_key: str, owner: str) -> str:
    """Where the lock's owner leaves its fetch error for the callers waiting on it."""
    return f"{lock_key}:error:{owner}"


EVENTS_INGESTED_KEY = f"{PREFIX}:metrics:events_ingested"
# A hash: field `<destination id>:<outcome>` -> fetches.
TOKEN_FETCHES_KEY = f"{PREFIX}:metrics:token_fetches"
# A hash: field `<destination id>:<outcome>` -> attempts (outcome: `ok` or the failure reason).
ATTEMPTS_KEY = f"{PREFIX}:metrics:attempts"
# A hash: field `<destination id>:<outcome>` -> deliveries ended so (outcome: `delivered` or `failed`).
DELIVERIES_FINISHED_KEY = f"{PREFIX}:metrics:deliveries_finished"
# A hash: field `<destination id>:<bucket>` -> attempts whose duration falls in that bucket (`le_<ms>`,
# not cumulative, or `le_inf`), and `<destination id>:sum_ms` -> their durations added up.
ATTEMPT_LATENCY_KEY = f"{PREFIX}:metrics:attempt_latency"
# Every key of the /metrics counters (`delivery.counters`).
METRICS_KEYS = (
    EVENTS_INGESTED_KEY, TOKEN_FETCHES_KEY, ATTEMPTS_KEY, DELIVERIES_FINISHED_KEY, ATTEMPT_LATENCY_KEY,
)


def token_fetch_field(*, destination_id: int, outcome: str) -> str:
    """The field of `TOKEN_FETCHES_KEY` counting a destination's token fetches with `outcome`."""
    return f"{destination_id}:{outcome}"


def destination_field(*, destination_id: int, label: str) -> str:
    """A field of the per-destination metrics hashes (`ATTEMPTS_KEY` and those after it)."""
    return f"{destination_id}:{label}"
