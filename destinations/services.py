"""The operator actions on a destination, one service each, whichever door the operator used.

The API (`destinations.api`), the admin (`destinations.admin`, `destinations.rotation_admin`)
and the console (`delivery.console.actions`) only translate input and these results, so that
an action follows the same rules and leaves the same audit entry through all three:

- `pause_destination`, `resume_destination`: recorded as an update of `enabled`.
- `start_key_rotation`, `finish_key_rotation`: recorded as such; raise `RotationRefused`
  (the API's 400) or `RotationConflict` (its 409).
- `send_test`: the delivery log records it (kind `test`); `TestOutcome.succeeded` says
  whether the partner accepted it.
- `start_batch_now`: raises `BatchNotQueued` when the broker does not answer (the API's 503).
- `apply_segment_ttl_change`: a segment's new TTL reaches its existing memberships, in a task
  queued once the change commits.
- `delete_segments`: recorded, after the ingestions writing to them have committed; raises
  `SegmentBusy` (the API's 409) rather than wait for one long.
- `close_circuit`: closes an open circuit by hand (`delivery.services.close_circuit`); raises
  `CircuitAlreadyClosed` (the API's 409) when it is closed.
- `resync`: `delivery.services.resync` (CONTRACT §7), recorded as `resync` with its scope;
  raises `ResyncRefused` (the API's 400 naming the field, or 409) or `ResyncNotQueued` (503).

Every audit entry goes through `destinations.audit.record_change`, naming who acted and
through which door (`ChangeSource`: api, admin, console), in the change's transaction.

The seam between the apps: this is the ONE module of `destinations` that imports `delivery`.
Every other module of `destinations` stays free of it, so that the configuration stands on its
own and `delivery` depends on `destinations`, never the other way round.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Count, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from kombu.exceptions import OperationalError

from delivery import dialect, tasks
from delivery import services as delivery_services
from delivery.models import Delivery, DeliveryStatus, DestinationDevice
from delivery.sending import rounds
from destinations import signing
from destinations.audit import record_change, snapshot
from destinations.models import ChangeAction, Destination, Segment
from destinations.signing import RotationConflict, RotationRefused

__all__ = [
    "BROKER_UNAVAILABLE",
    "BatchNotQueued",
    "CircuitAlreadyClosed",
    "EnabledChange",
    "ResyncNotQueued",
    "ResyncRefused",
    "RotationConflict",
    "RotationRefused",
    "SegmentBusy",
    "TestOutcome",
    "apply_segment_ttl_change",
    "close_circuit",
    "delete_segments",
    "finish_key_rotation",
    "pause_destination",
    "resume_destination",
    "resync",
    "send_test",
    "start_batch_now",
    "start_key_rotation",
    "with_backlog",
]

logger = logging.getLogger(__name__)

Actor = AbstractBaseUser | AnonymousUser | None

BROKER_UNAVAILABLE = "The task broker is unavailable; try again shortly."
# Below PostgreSQL's default deadlock_timeout (1 s): should a deletion and an import wait on each
# other (the import holds the segment from one chunk, and a membership of it from another), the
# deletion gives up first instead of PostgreSQL aborting the import.
SEGMENT_DELETION_LOCK_TIMEOUT = "900ms"

CircuitAlreadyClosed = delivery_services.CircuitAlreadyClosed


ResyncRefused = delivery_services.ResyncRefused
ResyncNotQueued = delivery_services.ResyncNotQueued


class DestinationPaused(Exception):
    """The destination is paused: nothing is sent to it, a batch included (CONTRACT §2; HTTP 409)."""


class SegmentBusy(Exception):
    """A segment could not be deleted now: an ingestion writing to it holds it (the API's 409)."""


class BatchNotQueued(Exception):
    """The batch task could not be queued: the broker does not answer (nothing was started)."""


@dataclass(frozen=True)
class EnabledChange:
    """A pause or resume: the destination as saved, and whether `enabled` actually changed."""

    destination: Destination
    changed: bool


@dataclass(frozen=True)
class TestOutcome:
    """A test document's fate, decided once: `succeeded` is the delivery log's verdict.

    `attempts` is 0 when the document was refused before any exchange; then
    `status_code`, `duration_ms` and `reason` are None and `error` is "".
    """

    delivery: Delivery
    succeeded: bool
    attempts: int
    status_code: int | None
    duration_ms: int | None
    reason: str | None
    error: str


def pause_destination(*, destination_id: int, actor: Actor, source: str) -> EnabledChange:
    """Pause a destination (its pending work waits) and record it; Destination.DoesNotExist if gone."""
    return _set_enabled(destination_id=destination_id, enabled=False, actor=actor, source=source)


def resume_destination(*, destination_id: int, actor: Actor, source: str) -> EnabledChange:
    """Resume a destination (its pending work goes out at the next tick) and record it."""
    return _set_enabled(destination_id=destination_id, enabled=True, actor=actor, source=source)


def _set_enabled(*, destination_id: int, enabled: bool, actor: Actor, source: str) -> EnabledChange:
    with transaction.atomic():
        destination = Destination.objects.select_for_update().get(pk=destination_id)
        before = snapshot(destination)
        destination.enabled = enabled
        destination.save(update_fields=["enabled", "updated_at"])
        recorded = record_change(
            actor=actor, source=source, action=ChangeAction.UPDATE, instance=destination, before=before
        )
    return EnabledChange(destination=destination, changed=recorded is not None)


def start_key_rotation(*, destination: Destination, new_key: str, actor: Actor, source: str) -> Destination:
    """Start an HMAC key rotation (old and new key both sign) and record it; return the destination.

    Raises RotationRefused (not HMAC, empty or unchanged key) or RotationConflict
    (a rotation is already under way); then nothing is changed or recorded.
    """
    before = snapshot(destination)
    with transaction.atomic():
        signing.start_key_rotation(destination=destination, new_key=new_key)
        _record(action=ChangeAction.START_KEY_ROTATION, destination=destination, before=before,
                actor=actor, source=source)
    destination.refresh_from_db()
    return destination


def finish_key_rotation(*, destination: Destination, actor: Actor, source: str) -> Destination:
    """Finish an HMAC key rotation (the new key signs alone) and record it; return the destination.

    Raises RotationRefused (not HMAC) or RotationConflict (no rotation under way).
    """
    before = snapshot(destination)
    with transaction.atomic():
        signing.finish_key_rotation(destination=destination)
        _record(action=ChangeAction.FINISH_KEY_ROTATION, destination=destination, before=before,
                actor=actor, source=source)
    destination.refresh_from_db()
    return destination


def _record(*, action: str, destination: Destination, before: dict, actor: Actor, source: str) -> None:
    record_change(actor=actor, source=source, action=action, instance=destination, before=before)


def send_test(*, destination: Destination) -> TestOutcome:
    """Send one sample document now (kind `test`, not retried) and say whether the partner took it."""
    delivery = rounds.send_test_document(destination=destination)
    last = delivery.attempts.order_by("-number").first()
    succeeded = delivery.status == DeliveryStatus.DELIVERED
    if last is None:
        return TestOutcome(delivery=delivery, succeeded=succeeded, attempts=0, status_code=None,
                           duration_ms=None, reason=None, error="")
    return TestOutcome(
        delivery=delivery,
        succeeded=succeeded,
        attempts=last.number,
        status_code=last.status_code,
        duration_ms=last.duration_ms,
        reason=last.reason or None,
        error=last.error,
    )


def violated_constraint(error: IntegrityError) -> str | None:
    """The name of the constraint a refused write broke, read alike on PostgreSQL and SQLite."""
    return dialect.violated_constraint(error)


def start_batch_now(*, destination: Destination) -> None:
    """Queue the destination's batch now: the changes since its last cut-off, as kind `batch`.

    Raises DestinationPaused when it is paused, BatchNotQueued when the broker does not answer;
    nothing is started then.
    """
    if not Destination.objects.filter(pk=destination.pk, enabled=True).exists():
        raise DestinationPaused(f"{destination.name} is paused: resume it to send its batch.")
    try:
        tasks.send_batch_now.delay(destination.pk)
    except OperationalError as error:
        logger.warning("could not queue the batch of destination %s: %s", destination.pk, error)
        raise BatchNotQueued(BROKER_UNAVAILABLE) from error


def apply_segment_ttl_change(*, segment: Segment) -> None:
    """Queue the move of the segment's active memberships to its new TTL, once the change commits.

    The work is a task on the `maintenance` queue (`delivery.tasks.apply_segment_ttl_change`),
    so that the request answers at once whatever the segment's size. The task reads the TTL
    when it runs: two quick changes leave the latest. When the broker does not answer, the
    work is done here instead, so that the change is never lost (the request is then slow).
    """
    segment_id = segment.pk
    transaction.on_commit(lambda: _queue_segment_ttl_change(segment_id))


def _queue_segment_ttl_change(segment_id: int) -> None:
    try:
        tasks.apply_segment_ttl_change.delay(segment_id)
    except OperationalError as error:
        logger.warning("segment %s: TTL change not queued (%s); applying it now", segment_id, error)
        tasks.apply_segment_ttl_change(segment_id)


def delete_segments(*, segment_ids: list[int], actor: Actor, source: str) -> int:
    """Delete the segments, each recorded, with (Django's cascade) their memberships and mappings.

    Each is locked `FOR UPDATE` first, in ID order. Ingestion holds the segments it writes
    `FOR KEY SHARE` until it commits (`delivery.intake.storage.ensure_segments`), so the deletion
    waits for it and the cascade then deletes every membership it wrote: no database constraint
    does that any more (delivery migration 0009). A wait longer than
    `SEGMENT_DELETION_LOCK_TIMEOUT` gives up: `SegmentBusy`, nothing deleted. Returns how many were.
    """
    try:
        with transaction.atomic():
            dialect.give_up_lock_waits_after(SEGMENT_DELETION_LOCK_TIMEOUT)
            segments = list(Segment.objects.select_for_update().filter(pk__in=segment_ids).order_by("pk"))
            for segment in segments:
                record_change(actor=actor, source=source, action=ChangeAction.DELETE, instance=segment)
            Segment.objects.filter(pk__in=[segment.pk for segment in segments]).delete()
    except DatabaseError as error:
        if not dialect.is_lock_given_up(error):
            raise
        listed = ", ".join(map(str, sorted(segment_ids)))
        raise SegmentBusy(f"Segment {listed} is being written by an ingestion in progress; nothing was "
                          "deleted. Try again once it has finished.") from None
    return len(segments)


# ---- the circuit breaker (CONTRACT §7) ------------------------------------------------------


def close_circuit(*, destination: Destination, actor: Actor, source: str) -> Destination:
    """Close the destination's open circuit now, recorded as done by `actor` through `source`.

    Raises CircuitAlreadyClosed when it is closed. Its backlog then drains, ramping up.
    """
    return delivery_services.close_circuit(destination=destination, actor=actor, source=source)


def resync(*, destination: Destination, since: dt.datetime | None, actor: Actor, source: str) -> int:
    """Queue a fresh full-state real-time send of the destination's devices; return how many.

    Every device with an active mapping, or with `since` only those of its deliveries that
    failed since then (`delivery.services.resync`). A paused destination accepts it: the
    devices go out on the resume.
    """
    return delivery_services.resync(destination=destination, since=since, actor=actor, source=source)


def with_backlog(destinations: QuerySet[Destination]) -> QuerySet[Destination]:
    """`destinations` with `pending_devices` and `oldest_pending_at` annotated (CONTRACT §7).

    Two subqueries per row, through the partial index of pending destination devices, so that a
    page of destinations costs one query whatever its length.
    """
    pending = DestinationDevice.objects.filter(destination=OuterRef("pk"), pending_since__isnull=False)
    count = pending.order_by().values("destination").annotate(n=Count("id")).values("n")
    oldest = pending.order_by("pending_since").values("pending_since")[:1]
    return destinations.annotate(
        pending_devices=Coalesce(Subquery(count), Value(0)), oldest_pending_at=Subquery(oldest)
    )
