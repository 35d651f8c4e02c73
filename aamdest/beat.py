"""One scheduler, even by mistake: beat sends only while it holds the leader lease in Redis (CONTRACT §6).

`celery -A aamdest beat` uses `LeaderScheduler` (CELERY_BEAT_SCHEDULER in settings). At every
tick it takes or renews a lease (`SET NX PX`, renewed by a compare-and-expire script) before it
sends anything; a second beat finds the lease held and stands by, polling, and takes over within
`AAMDEST_BEAT_LEASE_S` once the first stops renewing. A leader that cannot reach Redis or finds
its lease gone stops sending at once, so two beats never both send. A beat that stops cleanly
hands the lease back, and its successor takes over at its next poll.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

import redis
from celery.beat import PersistentScheduler
from django.conf import settings
from redis.commands.core import Script

from delivery.coordination import BEAT_LEADER_KEY, delete_if_held, probe_client
from delivery.observability.heartbeat import record_beat_tick

logger = logging.getLogger(__name__)

LEADER_KEY = BEAT_LEADER_KEY

# KEYS[1]: the lease. ARGV: this beat's id, lease (ms). 1 when this beat holds it afterwards.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
"""



class LeaderLease:
    """The Redis lease that makes one beat the leader; `hold()` takes or renews it."""

    def __init__(self, *, url: str, lease_s: int) -> None:
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_ms = lease_s * 1000
        self.client = probe_client(url)  # its own connection: short deadlines, closed with the beat
        self._hold = Script(self.client, _HOLD.encode())

    def hold(self) -> bool:
        """True when this beat holds the lease now; False when another does or Redis does not answer."""
        try:
            return bool(self._hold(keys=[LEADER_KEY], args=[self.holder, self.lease_ms]))
        except redis.RedisError as exc:
            logger.warning("beat: Redis does not answer (%s); sending nothing until it does", exc)
            return False

    def release(self) -> None:
        try:
            delete_if_held(self.client, key=LEADER_KEY, holder=self.holder)
        except redis.RedisError as exc:
            logger.warning("beat: could not hand back the lease (%s); it expires by itself", exc)


class LeaderScheduler(PersistentScheduler):
    """Celery's file-backed scheduler, sending only while it holds the leader lease."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.lease = LeaderLease(url=settings.AAMDEST_REDIS_URL, lease_s=settings.AAMDEST_BEAT_LEASE_S)
        self.is_leader: bool | None = None  # unknown until the first tick, which logs the role
        super().__init__(*args, **kwargs)

    @property
    def poll_interval_s(self) -> float:
        # Several renewals per lease, so that a slow Redis round trip never lets it lapse.
        return min(1.0, settings.AAMDEST_BEAT_LEASE_S / 3)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Send what is due if this beat leads; return the seconds until the next call."""
        is_leader = self.lease.hold()
        if is_leader != self.is_leader:
            self.is_leader = is_leader
            state = "leading: sending the schedule" if is_leader else "standing by: another beat leads"
            logger.warning("beat %s: %s", self.lease.holder, state)
        if not is_leader:
            return self.poll_interval_s
        record_beat_tick()
        return min(super().tick(*args, **kwargs), self.poll_interval_s)

    def close(self) -> None:
        if self.is_leader:
            self.lease.release()
            self.is_leader = False
        super().close()
