"""Celery tasks: thin wrappers that take ids, re-fetch, and call the sending services.

Run the workers with threads: sending is I/O-bound (HTTP with a 3 s deadline)
and retries sleep, so threads serve many destinations at once on few cores:

    celery -A aamdest worker --pool threads --concurrency 8
    celery -A aamdest beat

Give each worker at least 2 × `AAMDEST_DESTINATION_CONCURRENCY` threads (4 by
default): one partner timing out on every request then holds at most 4 of them
and the others keep serving other destinations. Database connections are
per thread; Celery's Django fix-up closes each thread's connection around every
task, so a thread never carries a broken connection from one task to the next.

Wake-ups: ingestion calls `schedule_flushes` on commit; a flush that leaves
work not yet due schedules itself at `next_due_at`; beat's `tick`, every second,
is the safety net (expired waits, resumed destinations) and re-sends the
deliveries of dead workers once their lease passes.
"""

from __future__ import annotations

import datetime as dt
import logging

import redis
from celery import shared_task
from django.utils import timezone
from kombu.exceptions import OperationalError

from delivery.models import Delivery
from delivery.realtime.claiming import find_due_destination_ids, next_due_at
from delivery.realtime.slots import holding_slot, redis_client
from delivery.sending.rounds import (
    reap_expired_deliveries,
    send_delivery,
    send_due_requests,
)
from destinations.models import Destination

logger = logging.getLogger("aamdest.delivery")

# How many requests one claim takes: enough to amortise its queries, few enough
# that one worker does not hog a destination's whole backlog.
CLAIM_MAX_REQUESTS = 25
# While a flush is queued and not started, more wake-ups are not queued (it covers them).
QUEUED_FLUSH_TTL_S = 10
# A destination whose work is due but was locked by another claim is looked at again after this.
MIN_WAKEUP_MS = 250
SLOT_MARGIN_MS = 10_000


@shared_task(ignore_result=True)
def flush_destination(destination_id: int) -> None:
    """Send the destination's due real-time requests, within one of its concurrency slots."""
    # From here on a new wake-up queues another flush: nothing that arrives later is missed.
    redis_client().delete(_queued_key(destination_id))
    destination = Destination.objects.filter(pk=destination_id).first()
    if destination is None:
        return
    with holding_slot(destination_id=destination_id, expiry_ms=slot_expiry_ms(destination)) as renew:
        if renew is None:
            return  # every slot is held: the holders drain the destination and look again when done

        def keep_slot_and_call_help(deliveries: list[Delivery]) -> None:
            renew()
            if len(deliveries) == CLAIM_MAX_REQUESTS:
                # A full claim: more is probably due. Another flush may take a free slot
                # and claim in parallel while this one waits for the partner.
                schedule_flushes({destination_id})

        send_due_requests(
            destination=destination, max_requests=CLAIM_MAX_REQUESTS, before_sending=keep_slot_and_call_help
        )
    _schedule_wakeup(destination)


@shared_task(ignore_result=True)
def send_delivery_task(delivery_id: int) -> None:
    """Send one pending delivery (a redelivery, or one whose worker died), then wake its destination."""
    delivery = Delivery.objects.filter(pk=delivery_id).select_related("destination").first()
    if delivery is None:
        return
    destination_id = delivery.destination_id
    # One task at a time per delivery: a duplicate task (the reaper and a redelivery
    # racing, a broker redelivery) returns here instead of sending alongside.
    guard = f"aamdest:sending:{delivery_id}"
    if not redis_client().set(guard, 1, nx=True, px=slot_expiry_ms(delivery.destination)):
        return  # if that task's worker dies, the lease brings the delivery back
    try:
        send_delivery(delivery_id=delivery_id)
    finally:
        redis_client().delete(guard)
    # Its devices are free again: changes that waited for it may now go.
    schedule_flushes({destination_id})


@shared_task(ignore_result=True)
def tick() -> None:
    """Run by beat every second: wake destinations with due work, re-send dead workers' deliveries."""
    now = timezone.now()
    schedule_flushes(find_due_destination_ids(now=now))
    for delivery_id in reap_expired_deliveries(now=now):
        logger.warning("delivery %s: its worker stopped renewing the lease; sending it again", delivery_id)
        send_delivery_task.delay(delivery_id)


def schedule_flushes(destination_ids: set[int]) -> None:
    """Queue one flush per destination unless one is already queued and not yet started.

    Never raises for a broker or Redis outage (the events are stored; beat's
    tick sends them once the broker answers again): it logs instead.
    """
    if not destination_ids:
        return
    ordered = sorted(destination_ids)
    try:
        pipeline = redis_client().pipeline(transaction=False)
        for destination_id in ordered:
            pipeline.set(_queued_key(destination_id), 1, nx=True, ex=QUEUED_FLUSH_TTL_S)
        queued = pipeline.execute()
        for destination_id, is_new in zip(ordered, queued, strict=True):
            if is_new:
                _queue_flush(destination_id)
    except redis.RedisError as error:
        logger.warning("could not schedule flushes for destinations %s: %s", ordered, error)


def _queue_flush(destination_id: int) -> None:
    try:
        flush_destination.delay(destination_id)
    except OperationalError as error:
        redis_client().delete(_queued_key(destination_id))
        logger.warning("could not queue a flush of destination %s: %s", destination_id, error)


def _schedule_wakeup(destination: Destination) -> None:
    """Flush again when the destination's pending work falls due (one timer at a time)."""
    if flush_destination.app.conf.task_always_eager:
        return  # eager mode runs countdowns at once: beat's tick does the waiting there
    destination_id = destination.pk
    now = timezone.now()
    due = next_due_at(destination=destination, now=now)
    if due is None:
        return
    delay_ms = max(int((due - now) / dt.timedelta(milliseconds=1)), MIN_WAKEUP_MS)
    # The timer key expires as the timer fires, so the flush it starts may set the next one.
    if redis_client().set(_timer_key(destination_id), 1, nx=True, px=delay_ms):
        flush_destination.apply_async((destination_id,), countdown=delay_ms / 1000)


def slot_expiry_ms(destination: Destination) -> int:
    """How long a flush may hold a slot between renewals: one claim sent with all its retries."""
    round_ms = destination.timeout_ms + destination.retry_delay_ms
    return round_ms * (destination.max_retries + 1) + SLOT_MARGIN_MS


def _queued_key(destination_id: int) -> str:
    return f"aamdest:flush-queued:{destination_id}"


def _timer_key(destination_id: int) -> str:
    return f"aamdest:flush-timer:{destination_id}"


# ---- lifecycle, retention and batch mode ---------------------------------------------------
# (delivery.lifecycle and delivery.batch)

# A scheduled batch or drain not started within this many seconds is dropped: beat's next check re-queues it.
BATCH_TASK_EXPIRES_S = 50


@shared_task(ignore_result=True)
def sweep() -> None:
    """Run by beat every minute, like `manage.py sweep`: TTL expiry, inactivity, erasures."""
    from delivery.lifecycle.sweeping import sweep as run_sweep

    result = run_sweep(now=timezone.now())
    schedule_flushes(result.destination_ids)


@shared_task(ignore_result=True)
def erase_devices() -> None:
    """Run by beat every 10 seconds: forget the devices whose "0"s are out, soon after an opt-out."""
    from delivery.lifecycle.erasure import erase_forgotten_devices

    result = erase_forgotten_devices(now=timezone.now())
    schedule_flushes(result.destination_ids)


@shared_task(ignore_result=True)
def prune_deliveries() -> None:
    """Run by beat every 10 minutes: delete delivery records older than AAMDEST_DELIVERY_LOG_DAYS."""
    from django.conf import settings

    from delivery.lifecycle.pruning import prune_delivery_log

    prune_delivery_log(now=timezone.now(), days=settings.AAMDEST_DELIVERY_LOG_DAYS)


@shared_task(ignore_result=True)
def send_batch_now(destination_id: int) -> None:
    """Cut the destination's batch now (the changes since its last cut-off) and send it (SPEC §5)."""
    from delivery.batch.transfers import cut_batch

    cut_batch(destination_id=destination_id, now=timezone.now(), only_if_due=False)
    send_stored_batch(destination_id)


@shared_task(ignore_result=True)
def send_due_batch(destination_id: int) -> None:
    """Cut and send the destination's scheduled batch, unless another run already did."""
    from delivery.batch.transfers import cut_batch

    cut_batch(destination_id=destination_id, now=timezone.now(), only_if_due=True)
    send_stored_batch(destination_id)


@shared_task(ignore_result=True)
def send_stored_batch(destination_id: int) -> None:
    """Send the destination's stored batch deliveries, within one of its concurrency slots."""
    from delivery.batch.transfers import send_batch_deliveries

    destination = Destination.objects.filter(pk=destination_id).first()
    if destination is None:
        return
    with holding_slot(destination_id=destination_id, expiry_ms=slot_expiry_ms(destination)) as renew:
        if renew is None:
            return  # real-time flushes hold every slot: beat's next check sends them
        send_batch_deliveries(destination=destination, after_each_claim=renew)


@shared_task(ignore_result=True)
def start_due_batches() -> None:
    """Run by beat every minute: start the batches due, and send stored batch deliveries left unsent."""
    from delivery.batch.transfers import find_due_batch_destination_ids, find_unsent_batch_destination_ids

    due = find_due_batch_destination_ids(now=timezone.now())
    for destination_id in sorted(due):
        send_due_batch.apply_async((destination_id,), expires=BATCH_TASK_EXPIRES_S)
    for destination_id in sorted(find_unsent_batch_destination_ids() - due):
        send_stored_batch.apply_async((destination_id,), expires=BATCH_TASK_EXPIRES_S)
