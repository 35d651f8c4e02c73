"""Waking destinations up: one queued flush at a time, and a timer for work not yet due.

Both are Redis keys (`delivery.coordination`): a flush is queued only while
none is queued and not yet started (`schedule_flushes`), and a destination has
at most one wake-up timer (`schedule_wakeup`). The flush itself is the Celery
task `delivery.tasks.flush_destination`, enqueued here by its registered name:
this stage does not import the tasks module above it.
"""

from __future__ import annotations

import datetime as dt
import logging

import redis
from celery import current_app
from celery.app.task import Task
from django.utils import timezone
from kombu.exceptions import OperationalError

from delivery.coordination import flush_queued_key, flush_timer_key, scheduling_client
from delivery.realtime.claiming import next_due_at
from destinations.models import Destination

logger = logging.getLogger("aamdest.delivery")

FLUSH_TASK = "delivery.tasks.flush_destination"
# While a flush is queued and not started, more wake-ups are not queued (it covers them).
QUEUED_FLUSH_TTL_S = 10
# A destination whose work is due but was locked by another claim is looked at again after this.
MIN_WAKEUP_MS = 250


def schedule_flushes(destination_ids: set[int]) -> None:
    """Queue one flush per destination unless one is already queued and not yet started.

    Never raises for a broker or Redis outage (the events are stored; beat's
    tick sends them once the broker answers again): it logs instead.
    """
    if not destination_ids:
        return
    ordered = sorted(destination_ids)
    try:
        pipeline = scheduling_client().pipeline(transaction=False)
        for destination_id in ordered:
            pipeline.set(flush_queued_key(destination_id), 1, nx=True, ex=QUEUED_FLUSH_TTL_S)
        queued = pipeline.execute()
        for destination_id, is_new in zip(ordered, queued, strict=True):
            if is_new:
                _queue_flush(destination_id)
    except redis.RedisError as error:
        logger.warning("could not schedule flushes for destinations %s: %s", ordered, error)


def mark_flush_started(destination_id: int) -> None:
    """From now on a new wake-up queues another flush: nothing that arrives later is missed."""
    scheduling_client().delete(flush_queued_key(destination_id))


def schedule_wakeup(destination: Destination) -> None:
    """Flush again when the destination's pending work falls due (one timer at a time)."""
    if current_app.conf.task_always_eager:
        return  # eager mode runs countdowns at once: beat's tick does the waiting there
    now = timezone.now()
    due = next_due_at(destination=destination, now=now)
    if due is None:
        return
    delay_ms = max(int((due - now) / dt.timedelta(milliseconds=1)), MIN_WAKEUP_MS)
    # The timer key expires as the timer fires, so the flush it starts may set the next one.
    if scheduling_client().set(flush_timer_key(destination.pk), 1, nx=True, px=delay_ms):
        _flush_task().apply_async((destination.pk,), countdown=delay_ms / 1000)


def _queue_flush(destination_id: int) -> None:
    try:
        _flush_task().delay(destination_id)
    except OperationalError as error:
        scheduling_client().delete(flush_queued_key(destination_id))
        logger.warning("could not queue a flush of destination %s: %s", destination_id, error)


def _flush_task() -> Task[..., None]:
    # By name: the registered task runs eagerly when the app says so (tests), as a direct call would.
    return current_app.tasks[FLUSH_TASK]
