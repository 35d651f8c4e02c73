"""Handing deliveries back at warm shutdown (`delivery.shutdown`), so that another worker sends them now.

A worker that stops does not sleep through a retry wait: what it still owns loses
its lease at once and a `send_delivery_task` is queued for each delivery, instead of
waiting for the 60 s take-back (CONTRACT §6).
"""

from __future__ import annotations

import logging

import redis
from celery import current_app
from django.utils import timezone
from kombu.exceptions import KombuError

from delivery.coordination import scheduling_client, sending_guard_key
from delivery.leases import hand_back_owned
from delivery.sending.attempts import Sending

# Queued by name for a delivery handed back at shutdown: this stage does not import the tasks above it.
SEND_TASK = "delivery.tasks.send_delivery_task"

logger = logging.getLogger("aamdest.delivery")


def hand_back(*, sendings: list[Sending]) -> list[int]:
    """Give up the deliveries this worker still owns to another worker now; return their ids.

    Their lease lapses now, their sending guards go (a delivery this worker owns has
    no guard but this task's, as when the reaper takes one back), and a
    `send_delivery_task` is queued for each; should that be lost, the reaper of the
    next tick sends it.
    """
    handed = hand_back_owned({s.delivery.pk: s.lease for s in sendings}, now=timezone.now())
    if handed:
        logger.warning("deliveries %s: this worker is shutting down; handed back to another", handed)
        try:
            scheduling_client().delete(*(sending_guard_key(delivery_id) for delivery_id in handed))
        except redis.RedisError as error:
            logger.warning("could not drop the sending guards of %s (they expire): %s", handed, error)
        queue_sends(handed)
    return handed


def queue_sends(delivery_ids: list[int]) -> None:
    """Queue a `send_delivery_task` per delivery, for another worker. Logs a broker error, never raises."""
    queue_for_another_worker(SEND_TASK, delivery_ids)


def queue_for_another_worker(task_name: str, ids: list[int]) -> None:
    """Queue `task_name` once per id (a delivery, a destination) for another worker; log a broker error.

    Never raises: what this worker hands back is found again by beat's tick (the reaper,
    the batch check) should the broker not take it.
    """
    if current_app.conf.task_always_eager:
        return  # no other worker: beat's tick (or the test) takes them
    try:
        for an_id in ids:
            current_app.tasks[task_name].delay(an_id)
    except (KombuError, redis.RedisError, OSError) as error:
        logger.warning("could not queue %s for %s (beat's tick will take them): %s", task_name, ids, error)
