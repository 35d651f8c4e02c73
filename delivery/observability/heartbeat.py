"""Beat's heartbeat: the time of its last tick, kept in Redis for /healthz and /metrics.

The beat process that leads (aamdest/beat.py) writes it at every tick; a web process reads it.
A beat that died or stands by without a leader shows as a tick growing old.
"""

from __future__ import annotations

import logging
import time

import redis

from delivery.coordination import BEAT_TICK_KEY, beat_client

logger = logging.getLogger(__name__)

# Long enough to outlive any outage worth seeing, short enough that a dismantled fleet leaves nothing.
BEAT_TICK_TTL_S = 7 * 24 * 3600


def record_beat_tick(*, at: float | None = None) -> None:
    """Store `at` (Unix seconds, now by default) as beat's last tick. Best effort: logs a Redis error."""
    try:
        client = beat_client()
        client.set(BEAT_TICK_KEY, repr(at or time.time()), ex=BEAT_TICK_TTL_S)
    except redis.RedisError as exc:
        logger.warning("could not record beat's tick: %s", exc)


def last_beat_tick() -> float | None:
    """Unix seconds of beat's last tick; None when no beat ever ticked or Redis does not answer."""
    try:
        raw = beat_client().get(BEAT_TICK_KEY)
    except redis.RedisError:
        return None
    return float(raw) if raw else None
