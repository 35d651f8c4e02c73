"""Celery tasks: thin wrappers that take ids and call one stage function each.

Workers run threads (sending is I/O-bound: HTTP with a 3 s deadline, retries that
sleep), configured in the app itself so that the plain commands are right:

    celery -A aamdest worker      # all three queues; -Q realtime, -Q batch,maintenance
    celery -A aamdest beat

The app's default of max(16, 2 × `AAMDEST_DESTINATION_CONCURRENCY` + 8) threads
(`AAMDEST_WORKER_THREADS`) means one partner timing out on every request holds at
most its concurrency of them; the others keep serving other destinations. Database connections are
per thread; Celery's Django fix-up closes each thread's connection around every
task, so a thread never carries a broken connection from one task to the next.

Wake-ups (`delivery.realtime.scheduling`): ingestion calls `schedule_flushes` on
commit; a flush that leaves work not yet due schedules itself at `next_due_at`;
beat's `tick`, every second, is the safety net (expired waits, resumed
destinations) and re-sends the deliveries of dead workers once their lease
passes. The real-time path, step by step: `delivery.realtime.flush`.
"""

from __future__ import annotations

import datetime as dt
import logging

from celery import Task, shared_task
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from delivery.alerts import job as alert_jobs
from delivery.batch.transfers import (
    cut_batch,
    drain_stored_batch,
    find_due_batch_destination_ids,
    find_unsent_batch_destination_ids,
)
from delivery.leases import take_parked
from delivery.lifecycle import expiry
from delivery.lifecycle.erasure import erase_forgotten_devices
from delivery.lifecycle.pruning import prune_delivery_log
from delivery.lifecycle.sweeping import sweep as run_sweep
from delivery.realtime.claiming import find_due_destination_ids
from delivery.realtime.flush import run_flush, send_one_delivery, take_back_expired
from delivery.realtime.probing import run_probe, wake_after_close
from delivery.realtime.resync import ResyncProgress, mark_for_resync
from delivery.realtime.scheduling import schedule_flushes
from delivery.sending.circuit import find_due_probe_ids, release_turned_off
from delivery.shutdown import Stopping
from destinations.models import Destination, Segment

logger = logging.getLogger("aamdest.delivery")

# A probe task not started within this many seconds is dropped: the next tick queues another.
PROBE_TASK_EXPIRES_S = 5


@shared_task(ignore_result=True)
def flush_destination(destination_id: int) -> None:
    """Send the destination's due real-time requests, within one of its concurrency slots."""
    run_flush(destination_id=destination_id)


@shared_task(ignore_result=True)
def send_delivery_task(delivery_id: int) -> None:
    """Send one pending delivery (a redelivery, or one whose worker died), then wake its destination."""
    send_one_delivery(delivery_id=delivery_id)


@shared_task(ignore_result=True)
def probe_circuit(destination_id: int) -> None:
    """Probe the destination's open circuit, unless another worker does (CONTRACT §7)."""
    run_probe(destination_id=destination_id)


@shared_task(ignore_result=True)
def tick() -> None:
    """Run by beat every second: wake due destinations, re-send dead workers' and resumed deliveries.

    And the circuit breaker's clock: queue the probes that are due (the first worker to
    take one probes, the others return), and close the circuits of destinations whose
    breaker was turned off.
    """
    now = timezone.now()
    schedule_flushes(find_due_destination_ids(now=now))
    for destination_id in sorted(find_due_probe_ids(now=now)):
        probe_circuit.apply_async((destination_id,), expires=PROBE_TASK_EXPIRES_S)
    for destination_id in release_turned_off(now=now):
        wake_after_close(destination_id)
    for delivery_id in take_back_expired(now=now):
        logger.warning("delivery %s: its worker stopped renewing the lease; sending it again", delivery_id)
        send_delivery_task.delay(delivery_id)
    for delivery_id in take_parked(now=now):
        logger.info("delivery %s: its destination was resumed; sending it", delivery_id)
        send_delivery_task.delay(delivery_id)


# ---- lifecycle, retention and batch mode ---------------------------------------------------
# (delivery.lifecycle and delivery.batch)

# A scheduled batch or drain not started within this many seconds is dropped: beat's next check re-queues it.
BATCH_TASK_EXPIRES_S = 50


@shared_task(ignore_result=True)
def sweep() -> None:
    """Run by beat every minute, like `manage.py sweep`: TTL expiry, inactivity, erasures."""
    result = run_sweep(now=timezone.now())
    schedule_flushes(result.destination_ids)


@shared_task(ignore_result=True)
def erase_devices() -> None:
    """Run by beat every 10 seconds: forget the devices whose "0"s are out, soon after an opt-out."""
    result = erase_forgotten_devices(now=timezone.now())
    schedule_flushes(result.destination_ids)


@shared_task(ignore_result=True)
def apply_segment_ttl_change(segment_id: int) -> None:
    """Move the expiry of the segment's active memberships to its current TTL (CONTRACT §4), in chunks.

    Queued once a TTL change commits, so that the request answers at once
    whatever the segment's size. Reads the TTL when it runs: two quick changes
    leave the latest. A segment deleted meanwhile has nothing to move.
    """
    segment = Segment.objects.filter(pk=segment_id).first()
    if segment is not None:
        expiry.apply_segment_ttl(segment=segment)


# A resync interrupted by a database error goes on from its last committed chunk, this often.
RESYNC_MAX_RETRIES = 5
RESYNC_RETRY_DELAY_S = 10


@shared_task(bind=True, ignore_result=True, max_retries=RESYNC_MAX_RETRIES)
def resync_destination(
    self: Task, destination_id: int, since: str | None, started_at: str, after: str = ""
) -> None:
    """Mark the resync's devices pending, in chunks, waking the destination after each (CONTRACT §7).

    On the `maintenance` queue. `since` and `started_at` are ISO times (`started_at`: the
    resync's "now", so that a retry chooses the same devices); `after` is where a retry goes
    on. A destination deleted meanwhile has nothing to resync.
    """
    destination = Destination.objects.filter(pk=destination_id).first()
    if destination is None:
        return
    progress = ResyncProgress(after=after)
    try:
        mark_for_resync(
            destination=destination,
            since=dt.datetime.fromisoformat(since) if since else None,
            now=dt.datetime.fromisoformat(started_at),
            progress=progress,
            on_chunk=lambda: schedule_flushes({destination_id}),
        )
    except DatabaseError as error:
        logger.warning("resync of destination %s stopped after %s devices (%s); retrying",
                       destination_id, progress.devices, error)
        raise self.retry(args=(destination_id, since, started_at, progress.after),
                         countdown=RESYNC_RETRY_DELAY_S, exc=error) from error
    logger.info("resync of destination %s: %s devices marked pending", destination_id, progress.devices)


@shared_task(ignore_result=True)
def prune_deliveries() -> None:
    """Run by beat every 10 minutes: delete delivery records older than AAMDEST_DELIVERY_LOG_DAYS."""
    prune_delivery_log(now=timezone.now(), days=settings.AAMDEST_DELIVERY_LOG_DAYS)


@shared_task(ignore_result=True)
def send_batch_now(destination_id: int) -> None:
    """Cut the destination's batch now (the changes since its last cut-off) and send it (CONTRACT §5)."""
    try:
        cut_batch(destination_id=destination_id, now=timezone.now(), only_if_due=False)
    except Stopping as stopping:  # the worker shuts down: another one cuts it
        logger.warning("%s; queued again", stopping)
        send_batch_now.delay(destination_id)
        return
    send_stored_batch(destination_id)


@shared_task(ignore_result=True)
def send_due_batch(destination_id: int) -> None:
    """Cut and send the destination's scheduled batch, unless another run already did."""
    try:
        cut_batch(destination_id=destination_id, now=timezone.now(), only_if_due=True)
    except Stopping as stopping:  # the worker shuts down: another one cuts it
        logger.warning("%s; queued again", stopping)
        send_due_batch.apply_async((destination_id,), expires=BATCH_TASK_EXPIRES_S)
        return
    send_stored_batch(destination_id)


@shared_task(ignore_result=True)
def send_stored_batch(destination_id: int) -> None:
    """Send the destination's stored batch deliveries, within one of its concurrency slots."""
    drain_stored_batch(destination_id=destination_id)


@shared_task(ignore_result=True)
def start_due_batches() -> None:
    """Run by beat every minute: start the batches due, and send stored batch deliveries left unsent."""
    due = find_due_batch_destination_ids(now=timezone.now())
    for destination_id in sorted(due):
        send_due_batch.apply_async((destination_id,), expires=BATCH_TASK_EXPIRES_S)
    for destination_id in sorted(find_unsent_batch_destination_ids() - due):
        send_stored_batch.apply_async((destination_id,), expires=BATCH_TASK_EXPIRES_S)


# ---- alerts (delivery.alerts) --------------------------------------------------------------


@shared_task(ignore_result=True)
def run_alerts() -> None:
    """Run by beat every 5 seconds: alerts for circuit transitions, reminders; send and retry sends."""
    alert_jobs.run_alerts()


@shared_task(ignore_result=True)
def check_backlogs() -> None:
    """Run by beat every 30 seconds: a backlog_stale alert where a destination's backlog went stale."""
    alert_jobs.check_backlogs()
