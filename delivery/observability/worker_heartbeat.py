"""Workers' heartbeats: proof, every few seconds, that a worker can still do work (CONTRACT §6).

Each worker runs a `Heartbeat` thread (started by aamdest/celery.py once the worker is ready).
Every `AAMDEST_WORKER_HEARTBEAT_S` it submits a no-op to the worker's own pool. It writes the
key `aamdest:worker:<node name>` (the time, the PID and the machine, with a TTL) when that
no-op ran, or when a pool thread got on with its work since the last beat (`delivery.progress`:
a pool busy with long flushes is not hung). So the key grows old when the worker is dead
(SIGKILL, a crash), when it is stopped (SIGSTOP), and when every pool thread is stuck.
`manage.py worker_probe` reads one key for an orchestrator; /metrics shows them all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from delivery.coordination import WORKER_HEARTBEAT_PATTERN, beat_client, worker_heartbeat_key
from delivery.progress import last_progress

logger = logging.getLogger(__name__)

# How long a heartbeat stays readable after its worker stopped writing it: the probe and /metrics
# can say "hung for N s" (or "dead") for that long; after it, "no heartbeat".
HEARTBEAT_TTL_S = 3600
# How long stopping waits for a beat under way: one wait for the no-op and one Redis write.
STOP_WAIT_S = 3.0
# How many worker keys /metrics reads at most.
MAX_WORKERS_SHOWN = 1000


class Pool(Protocol):
    """What the heartbeat needs of a Celery pool (`celery.concurrency.base.BasePool`)."""

    def apply_async(self, target: Callable[..., Any], args: tuple[Any, ...] | None = ...,
                    kwargs: dict[str, Any] | None = ..., **options: Any) -> Any: ...


@dataclass(frozen=True)
class WorkerBeat:
    """A worker's last heartbeat as stored."""

    hostname: str
    at: float  # Unix seconds
    pid: int
    machine: str

    @property
    def age_s(self) -> float:
        return max(time.time() - self.at, 0.0)


def noop() -> bool:
    """What the heartbeat runs in the pool: nothing; its running is the proof."""
    return True


class Heartbeat(threading.Thread):
    """The worker's heartbeat thread; `stop()` ends it and removes the key."""

    def __init__(self, *, hostname: str, pool: Pool, interval_s: float) -> None:
        super().__init__(name="aamdest-heartbeat", daemon=True)
        self.hostname, self.pool, self.interval_s = hostname, pool, interval_s
        self._stopped = threading.Event()
        self._noop_ran = threading.Event()
        self._noop_ran.set()  # none outstanding: submit the first
        self._progress_seen = last_progress()

    def run(self) -> None:
        while not self._stopped.is_set():
            if self.beat_once():
                write_heartbeat(self.hostname)
            self._stopped.wait(self.interval_s)

    def beat_once(self) -> bool:
        """Submit a no-op to the pool unless one is still waiting; True when the worker proved alive."""
        if self._noop_ran.is_set():
            self._noop_ran.clear()
            # RuntimeError: the pool is shut down (warm shutdown); only progress counts from then on.
            with contextlib.suppress(RuntimeError):
                self.pool.apply_async(noop, args=(), kwargs={}, callback=lambda _: self._noop_ran.set())
        # Waits at most one interval for the no-op: a free thread runs it at once.
        ran = self._noop_ran.wait(min(self.interval_s, 1.0))
        progress = last_progress()
        progressed, self._progress_seen = progress != self._progress_seen, progress
        return ran or progressed

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout=STOP_WAIT_S)  # so that no last write follows the removal
        try:
            beat_client().delete(worker_heartbeat_key(self.hostname))
        except redis.RedisError as exc:
            logger.warning("could not remove the heartbeat of %s: %s", self.hostname, exc)


def write_heartbeat(hostname: str, *, at: float | None = None) -> None:
    """Store now (or `at`) as `hostname`'s heartbeat. Best effort: logs a Redis error."""
    value = json.dumps({"at": at or time.time(), "pid": os.getpid(), "machine": socket.gethostname()})
    try:
        beat_client().set(worker_heartbeat_key(hostname), value, ex=HEARTBEAT_TTL_S)
    except redis.RedisError as exc:
        logger.warning("could not record the heartbeat of %s: %s", hostname, exc)


def read_heartbeat(hostname: str) -> WorkerBeat | None:
    """`hostname`'s last heartbeat, None when there is none. Raises redis.RedisError."""
    raw = beat_client().get(worker_heartbeat_key(hostname))
    return None if raw is None else _parse(hostname, raw)


def read_heartbeats() -> list[WorkerBeat]:
    """Every worker's last heartbeat, by node name. Raises redis.RedisError."""
    client = beat_client()
    keys = sorted(client.scan_iter(match=WORKER_HEARTBEAT_PATTERN, count=100))[:MAX_WORKERS_SHOWN]
    prefix = len(worker_heartbeat_key(""))
    values = client.mget(keys) if keys else []
    return [_parse(key.decode()[prefix:], raw) for key, raw in zip(keys, values, strict=True) if raw]


def _parse(hostname: str, raw: bytes | str) -> WorkerBeat:
    data = json.loads(raw)
    return WorkerBeat(
        hostname=hostname, at=float(data["at"]), pid=int(data["pid"]), machine=str(data["machine"])
    )
