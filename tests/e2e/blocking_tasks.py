"""A task for the worker-probe tests only: it holds a pool thread, as a task stuck on a lock would.

Loaded into a test worker with `--include tests.e2e.blocking_tasks`; never by the app.
"""

from __future__ import annotations

import threading

from celery import shared_task

from delivery.coordination import scheduling_client

BLOCKED_KEY = "aamdest:test:blocked"


@shared_task(ignore_result=True)
def block(seconds: float) -> None:
    """Count itself in Redis, then hold its thread for `seconds`."""
    scheduling_client().incr(BLOCKED_KEY)
    threading.Event().wait(seconds)
