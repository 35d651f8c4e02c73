"""Batch mode (CONTRACT §2): on its schedule, a destination receives what changed since its last batch.

A batch is cut, then sent:
- `cut_batch`, one transaction: fixes the new cut-off (`read_safe_cutoff`),
  reads the batch (`delivery.batch.reading`), adds the exits of devices erased
  since the last cut (`BatchExit`), packs the user objects into documents of
  `max_users_per_request` (one per partner ID, `""` when none) and stores them
  as pending deliveries of kind `batch`, a few at a time; then moves the
  destination's `batch_cutoff_seq` and `last_batch_at` and records which
  mappings the batch covered in full (`BatchCoverage`). A batch with nothing in
  it stores nothing, and still moves the cut-off and the schedule.
- `send_batch_deliveries`: claims the stored batch deliveries a few at a time
  (a conditional lease, `SKIP LOCKED`) and sends them with
  `delivery.sending.rounds.send_deliveries`. Failures stay `failed`, redeliverable; the
  cut-off has moved on regardless. A worker that dies mid-send leaves leased
  deliveries the reaper re-sends, and unleased ones the next drain takes.

Memory stays bounded whatever the batch's size: devices are streamed, and at
most `FLUSH_DOCUMENTS` documents are held before they are written, and a
round of `ROUND_USERS` user objects while sending.

A paused destination cuts no batch: its changes accumulate after the cut-off
and go in the first batch after it resumes. While its circuit is open or a
Retry-After holds it (CONTRACT §7), stored batch deliveries wait unsent
(a retry parked meanwhile resumes from its last attempt) until it closes.

Warm shutdown (`delivery.shutdown`): a cut in progress is abandoned (`Stopping`
rolls its transaction back: nothing was stored, the cut-off did not move) and its
task queued again for another worker; a drain finishes the round it posted,
hands back what waits for a retry (`delivery.sending.rounds`), claims nothing
more and queues `send_stored_batch` so that another worker sends the rest.
Cutting a large batch takes minutes, longer than any stop timeout: it starts
again rather than hold the worker.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from delivery import dialect
from delivery.batch.reading import read_batch_users
from delivery.batch.writing import BatchWriter
from delivery.leases import take_unleased
from delivery.lifecycle.erasure import batch_cut_lock_key
from delivery.models import BatchCoverage, BatchExit, Delivery, DeliveryKind, DeliveryStatus, MembershipChange
from delivery.realtime.slots import holding_slot, slot_expiry_ms
from delivery.sending import circuit
from delivery.sending.documents import INACTIVE, SegmentStatus, UserObject, user_entry
from delivery.sending.handing_back import queue_for_another_worker
from delivery.sending.rounds import send_deliveries
from delivery.shutdown import Stopping, is_stopping
from destinations.models import Destination, Mapping

# User objects a drain round sends at once (≈ 10 MB of documents).
ROUND_USERS = 50_000
MAX_ROUND_REQUESTS = 25
# Queued by name when a shutting-down worker leaves stored deliveries: this stage is below the tasks.
DRAIN_TASK = "delivery.tasks.send_stored_batch"
# How long a cut waits for ingestions in progress to commit before it gives up (a later run retries).
CUTOFF_LOCK_TIMEOUT = "60s"


@dataclass
class BatchCut:
    """What a cut stored; `skipped` says why nothing was cut ("" when it was)."""

    deliveries: int = 0
    users: int = 0
    devices: int = 0
    cutoff_seq: int | None = None
    skipped: str = ""


def is_batch_due(*, destination: Destination, now: dt.datetime) -> bool:
    """Whether `destination`'s scheduled batch is due: batch mode on, enabled, its interval elapsed."""
    if destination.batch_interval_hours is None or not destination.enabled:
        return False
    if destination.last_batch_at is None:
        return True
    return destination.last_batch_at + dt.timedelta(hours=destination.batch_interval_hours) <= now


def find_due_batch_destination_ids(*, now: dt.datetime) -> set[int]:
    """The destinations whose scheduled batch is due (beat's check)."""
    candidates = Destination.objects.filter(enabled=True, batch_interval_hours__isnull=False)
    return {destination.pk for destination in candidates if is_batch_due(destination=destination, now=now)}


def find_unsent_batch_destination_ids() -> set[int]:
    """The enabled destinations with stored batch deliveries nobody is sending."""
    unsent = Delivery.objects.filter(
        kind=DeliveryKind.BATCH, status=DeliveryStatus.PENDING, lease_until__isnull=True,
        destination__enabled=True, destination__in=Destination.objects.filter(circuit.sendable()),
    )
    return set(unsent.values_list("destination_id", flat=True).distinct())


# ---- cutting ----------------------------------------------------------------------------


def read_safe_cutoff() -> int:
    """The highest `MembershipChange.id` such that every change up to it is committed.

    Ids are drawn before commit, so a higher id may commit before a lower one.
    On PostgreSQL a SHARE lock on the table waits for the transactions writing
    to it, and holds new writers back for the instant of the read.
    """
    with transaction.atomic():
        dialect.lock_table_against_writers(MembershipChange, lock_timeout=CUTOFF_LOCK_TIMEOUT)
        return MembershipChange.objects.aggregate(last=Max("id"))["last"] or 0


def cut_batch(*, destination_id: int, now: dt.datetime, only_if_due: bool) -> BatchCut:
    """Cut the destination's batch as of `now` and store its documents (see the module docstring).

    `only_if_due`: the scheduled run, which does nothing unless `is_batch_due`;
    otherwise ("send batch now") the batch is cut whatever the schedule. Two
    cuts of one destination run one after the other; the second finds what
    changed since the first.
    """
    until = read_safe_cutoff()
    with transaction.atomic():
        _lock_batch_cut(destination_id)
        destination = Destination.objects.filter(pk=destination_id).first()
        if destination is None:
            return BatchCut(skipped="gone")
        if not destination.enabled:
            return BatchCut(skipped="paused")
        if only_if_due and not is_batch_due(destination=destination, now=now):
            return BatchCut(skipped="not due")
        after = destination.batch_cutoff_seq
        until = max(until, after or 0)
        mappings = _active_mappings(destination=destination, today=now.astimezone(dt.UTC).date())
        full, changed = _split_by_coverage(mappings=mappings, previous_batch_at=destination.last_batch_at)
        values = {mapping.segment_id: mapping.value for mapping in mappings}
        writer = BatchWriter(destination=destination)
        devices = read_batch_users(after=after, until=until, changed_segments=changed, full_segments=full,
                                   dpid=destination.user_dpid, now=now, values=values)
        for device in devices:
            if is_stopping():
                raise Stopping(f"the cut of destination {destination_id}'s batch is abandoned")
            writer.add(device.aam_uuid, device.entries)
        _add_exits(destination=destination, writer=writer, segments=set(changed), values=values)
        writer.finish()
        _record_coverage(mappings=mappings, batched_at=now)
        Destination.objects.filter(pk=destination_id).update(batch_cutoff_seq=until, last_batch_at=now)
    return BatchCut(
        deliveries=writer.deliveries, users=writer.users, devices=writer.devices, cutoff_seq=until
    )


def _lock_batch_cut(destination_id: int) -> None:
    # Held until commit; erasures share it, so that they see this cut-off before capturing exits.
    dialect.advisory_xact_lock(batch_cut_lock_key(destination_id))


def _active_mappings(*, destination: Destination, today: dt.date) -> list[Mapping]:
    return list(Mapping.objects.filter(destination=destination).active_on(today).order_by("segment_id"))


def _split_by_coverage(
    *, mappings: list[Mapping], previous_batch_at: dt.datetime | None
) -> tuple[list[int], list[int]]:
    """(segments to carry in full, segments to carry the changes of).

    A mapping is carried in full by the first batch, and by the first batch
    after it starts: one the previous batch did not carry (new, restarted after
    its end date, or moved to another segment).
    """
    covered = {
        coverage.mapping_id: (coverage.segment_id, coverage.batched_at)
        for coverage in BatchCoverage.objects.filter(mapping__in=[mapping.pk for mapping in mappings])
    }
    full: list[int] = []
    changed: list[int] = []
    for mapping in mappings:
        carried_by_previous = covered.get(mapping.pk) == (mapping.segment_id, previous_batch_at)
        was_carried = previous_batch_at is not None and carried_by_previous
        (changed if was_carried else full).append(mapping.segment_id)
    return full, changed


def _record_coverage(*, mappings: list[Mapping], batched_at: dt.datetime) -> None:
    BatchCoverage.objects.bulk_create(
        [BatchCoverage(mapping=mapping, segment_id=mapping.segment_id, batched_at=batched_at)
         for mapping in mappings],
        update_conflicts=True,
        unique_fields=["mapping"],
        update_fields=["segment_id", "batched_at", "updated_at"],
    )


def _add_exits(
    *, destination: Destination, writer: BatchWriter, segments: set[int], values: dict[int, str]
) -> None:
    """Add the exits of devices erased since the last cut, in the segments whose changes the batch carries."""
    waiting = BatchExit.objects.filter(destination=destination, delivery__isnull=True).order_by("id")
    carried_nothing = []
    for exit_ in waiting.iterator(chunk_size=1_000):
        statuses = [SegmentStatus(values[segment_id], INACTIVE, dt.datetime.fromisoformat(moment))
                    for segment_id, moment in exit_.segments if segment_id in segments]
        if not statuses:
            carried_nothing.append(exit_.pk)
            continue
        writer.add(
            exit_.aam_uuid,
            [user_entry(UserObject(aam_uuid=exit_.aam_uuid, partner_uuid=partner, regions=exit_.regions,
                                   segments=statuses))
             for partner in exit_.partner_uuids or [""]],
            exit_id=exit_.pk,
        )
    BatchExit.objects.filter(pk__in=carried_nothing).delete()


# ---- sending ----------------------------------------------------------------------------


def claim_batch_deliveries(*, destination: Destination, now: dt.datetime, count: int) -> list[Delivery]:
    """Lease up to `count` stored, unsent batch deliveries of `destination`, oldest first."""
    stored = Delivery.objects.filter(destination=destination, kind=DeliveryKind.BATCH)
    pks = take_unleased(destination=destination, deliveries=stored, now=now, count=count)
    return list(Delivery.objects.filter(pk__in=pks).order_by("pk"))


def drain_stored_batch(*, destination_id: int) -> None:
    """Send the destination's stored batch deliveries, within one of its concurrency slots."""
    destination = Destination.objects.filter(pk=destination_id).first()
    if destination is None:
        return
    with holding_slot(destination_id=destination_id, expiry_ms=slot_expiry_ms(destination)) as renew:
        if renew is None:
            return  # real-time flushes hold every slot: beat's next check sends them
        send_batch_deliveries(destination=destination, keep_slot=renew)
    if is_stopping():
        queue_for_another_worker(DRAIN_TASK, [destination_id])  # this worker stops: another sends the rest


def send_batch_deliveries(*, destination: Destination, keep_slot: Callable[[], bool] | None = None) -> int:
    """Send the destination's stored batch deliveries; return how many were sent.

    The drain ends when none is left, the destination is paused or its circuit open,
    or the worker stops.

    `keep_slot` runs after each round: it renews the caller's concurrency slot, and
    returns False when the slot was lost, which stops the drain (the next one sends the rest).
    """
    count = max(1, min(MAX_ROUND_REQUESTS, ROUND_USERS // destination.max_users_per_request))
    sent = 0
    while destination.enabled and not is_stopping():
        if circuit.is_blocked(destination, now=timezone.now()):
            break
        deliveries = claim_batch_deliveries(destination=destination, now=timezone.now(), count=count)
        if not deliveries:
            break
        send_deliveries(destination=destination, deliveries=deliveries, resume=True)
        sent += len(deliveries)
        if keep_slot is not None and not keep_slot():
            break
        try:
            destination.refresh_from_db()
        except Destination.DoesNotExist:
            break
    return sent
