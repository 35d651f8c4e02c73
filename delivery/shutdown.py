"""Warm shutdown: the one flag that tells this process's sending loops to stop claiming (CONTRACT §6).

A worker's main process sets it on SIGTERM (`aamdest/celery.py`, Celery's
`worker_shutting_down` signal); the pool's threads read it:

- a flush or a batch drain claims nothing more once it is set
  (`delivery.realtime.flush`, `delivery.batch.transfers`);
- a delivery waiting for its retry stops waiting and is handed back
  (`delivery.sending.rounds`): its lease is set to lapse now, so that another
  worker sends it within seconds instead of after the lease;
- an attempt already posted finishes (at most the destination's `timeout_ms`).

Nothing else reads it: web processes and commands never set it.
"""

from __future__ import annotations

import threading

_stopping = threading.Event()


class Stopping(Exception):
    """Raised to abandon long work (a batch cut) when the worker shuts down; its caller queues it again."""


def request_stop() -> None:
    """From now on this process claims nothing new and hands back what waits."""
    _stopping.set()


def is_stopping() -> bool:
    return _stopping.is_set()


def wait_unless_stopping(seconds: float) -> bool:
    """Sleep `seconds`, or less when a stop is requested meanwhile; True when stopping."""
    return _stopping.wait(timeout=max(seconds, 0.0))


def reset() -> None:
    """Forget a stop request (tests)."""
    _stopping.clear()
