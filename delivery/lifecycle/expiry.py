"""The segment lifecycle (CONTRACT §4): TTL expiry, segment TTL changes, 120-day inactivity.

Every exit here is recorded as a disqualification would be: the membership is
left (`datetime` = the moment it ended), a `MembershipChange` row is written
(batch mode reads it) and `delivery.intake.pending_marks.mark_pending` queues the
real-time "0"s. Forgetting devices (after inactivity or an opt-out) is
`delivery.lifecycle.erasure`.

Bounded work: memberships and devices are taken in chunks of `CHUNK_SIZE`, one
transaction each, with `FOR UPDATE SKIP LOCKED`, so that two sweeps never take
the same rows and a sweep never waits for an ingestion. Running a sweep twice
sends nothing twice: an ended membership is no longer active, so the second
sweep does not find it.

Locks: both sweeps lock devices first, as ingestion does (in `aam_uuid`
order, skipping those an ingestion holds), then their memberships, then the
`DestinationDevice` rows in the order ingestion uses. The device lock is what
makes `mark_pending` safe: an ingestion creates or rewrites a device's
`DestinationDevice` rows only under it, so without it a concurrent ingestion's
upsert could overwrite the sweep's left segment and lose a "0".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import cast

from django.db import transaction
from django.db.models import DateTimeField, Exists, ExpressionWrapper, F, OuterRef, Q, Subquery, Value
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Greatest, Trunc
from django.utils import timezone

from delivery.intake.merging import Change, ChangeKind
from delivery.intake.pending_marks import mark_pending
from delivery.models import Device, DeviceErasure, ErasureReason, Membership, MembershipChange
from destinations.models import Segment

CHUNK_SIZE = 5_000
# CONTRACT §4: a device not seen for this long leaves all its segments and is forgotten.
INACTIVITY = dt.timedelta(days=120)


@dataclass
class LifecycleResult:
    """What a lifecycle step did: memberships ended, and the destinations given real-time work."""

    memberships: int = 0
    devices: int = 0
    destination_ids: set[int] = field(default_factory=set)

    def add(self, other: LifecycleResult) -> None:
        self.memberships += other.memberships
        self.devices += other.devices
        self.destination_ids |= other.destination_ids


# ---- TTL ------------------------------------------------------------------------------


def expire_memberships(*, now: dt.datetime, chunk_size: int = CHUNK_SIZE) -> LifecycleResult:
    """End every active membership whose `expires_at` is at or before `now`, at its `expires_at`.

    Each chunk locks its memberships' devices first, in `aam_uuid` order and
    skipping those an ingestion (or another sweep) holds, as every writer of
    memberships and of `DestinationDevice` rows must (see
    `delivery.intake.storage`); then it re-reads the devices' memberships still
    active and expired. A skipped device is left for the next run.

    Returns how many ended and the real-time destinations that got "0"s to send.
    """
    result = LifecycleResult()
    after: tuple[dt.datetime, int] | None = None
    while True:
        with transaction.atomic():
            rows = _next_expired(now=now, after=after, chunk_size=chunk_size)
            if not rows:
                return result
            after = (rows[-1][2], rows[-1][0])
            step = _expire_devices({device_id for _, device_id, _ in rows}, now=now)
        result.add(step)
        if len(rows) < chunk_size:
            return result


def _next_expired(
    *, now: dt.datetime, after: tuple[dt.datetime, int] | None, chunk_size: int
) -> list[tuple[int, str, dt.datetime]]:
    """(pk, device_id, expires_at) of the next expired memberships in (expires_at, pk) order after `after`."""
    candidates = Membership.objects.filter(is_active=True, expires_at__lte=now)
    if after is not None:
        candidates = candidates.filter(Q(expires_at__gt=after[0]) | Q(expires_at=after[0], pk__gt=after[1]))
    ordered = candidates.order_by("expires_at", "pk").values_list("pk", "device_id", "expires_at")
    # `expires_at__lte` never matches NULL: every `expires_at` read here is a datetime.
    return cast(list[tuple[int, str, dt.datetime]], list(ordered[:chunk_size]))


def _expire_devices(aam_uuids: set[str], *, now: dt.datetime) -> LifecycleResult:
    """Lock the devices not held elsewhere, then end their expired memberships at their `expires_at`."""
    devices = list(
        Device.objects.filter(aam_uuid__in=aam_uuids)
        .order_by("aam_uuid")
        .select_for_update(skip_locked=True)
        .values_list("aam_uuid", flat=True)
    )
    # `expires_at__lte` never matches NULL: every `expires_at` read here is a datetime.
    expired = cast(list[tuple[int, str, int, dt.datetime]], list(
        Membership.objects.filter(device_id__in=devices, is_active=True, expires_at__lte=now)
        .order_by("device_id", "segment_id")
        .select_for_update(skip_locked=True)
        .values_list("pk", "device_id", "segment_id", "expires_at")
    )) if devices else []
    if not expired:
        return LifecycleResult()
    Membership.objects.filter(pk__in=[row[0] for row in expired]).update(
        is_active=False, datetime=F("expires_at"), expires_at=None, updated_at=timezone.now()
    )
    exits = [(device_id, segment_id, ended_at) for _, device_id, segment_id, ended_at in expired]
    return LifecycleResult(memberships=len(expired), destination_ids=record_exits(exits=exits, now=now))


def apply_segment_ttl(*, segment: Segment, chunk_size: int = CHUNK_SIZE) -> int:
    """Recompute `expires_at` of the segment's active memberships from its current `ttl_days`.

    Set-based, in chunks of devices (each its own transaction), so that a
    segment of millions of members never holds them all locked. Memberships
    whose new expiry has passed end at the next sweep, at that expiry.
    Returns how many memberships were updated.
    """
    ttl_days = Segment.objects.filter(pk=segment.pk).values_list("ttl_days", flat=True).first()
    if ttl_days is None:
        return 0
    expires_at = _expiry_expression(ttl_days)
    updated = 0
    after = ""
    while True:
        with transaction.atomic():
            devices = list(
                Membership.objects.filter(segment_id=segment.pk, is_active=True, device_id__gt=after)
                .order_by("device_id")
                .values_list("device_id", flat=True)[:chunk_size]
            )
            if not devices:
                return updated
            updated += Membership.objects.filter(
                segment_id=segment.pk, is_active=True, device_id__gte=devices[0], device_id__lte=devices[-1]
            ).update(expires_at=expires_at, updated_at=timezone.now())
        after = devices[-1]


def _expiry_expression(ttl_days: int) -> Value | ExpressionWrapper[CombinedExpression]:
    """`delivery.intake.merging.compute_expires_at` as an SQL expression of `qualified_at`."""
    if ttl_days == 0:
        return Value(None, output_field=DateTimeField())
    if ttl_days == 1:
        # 00:00 UTC two days after the UTC date of the qualification.
        midnight = Trunc("qualified_at", "day", output_field=DateTimeField(), tzinfo=dt.UTC)
        return ExpressionWrapper(midnight + dt.timedelta(days=2), output_field=DateTimeField())
    return ExpressionWrapper(F("qualified_at") + dt.timedelta(days=ttl_days), output_field=DateTimeField())


# ---- inactivity -----------------------------------------------------------------------


def leave_inactive_devices(*, now: dt.datetime, chunk_size: int = CHUNK_SIZE) -> LifecycleResult:
    """Devices not seen for 120 days leave every segment (at `last_seen` + 120 days) and are to be forgotten.

    Each gets a `DeviceErasure` (reason `inactivity`); `delivery.lifecycle.erasure` erases
    it once its "0"s are out, unless it is seen again before.
    """
    result = LifecycleResult()
    threshold = now - INACTIVITY
    already_requested = DeviceErasure.objects.filter(aam_uuid=OuterRef("pk"))
    while True:
        with transaction.atomic():
            uuids = list(
                Device.objects.filter(last_seen__lte=threshold)
                .exclude(Exists(already_requested))
                .order_by("last_seen", "aam_uuid")
                .select_for_update(skip_locked=True)
                .values_list("aam_uuid", flat=True)[:chunk_size]
            )
            if not uuids:
                return result
            ended_at = ExpressionWrapper(
                Subquery(Device.objects.filter(pk=OuterRef("device_id")).values("last_seen")) + INACTIVITY,
                output_field=DateTimeField(),
            )
            step = end_active_memberships(aam_uuids=uuids, ended_at=ended_at, now=now)
            DeviceErasure.objects.bulk_create(
                [DeviceErasure(aam_uuid=uuid, reason=ErasureReason.INACTIVITY, requested_at=now)
                 for uuid in uuids],
                ignore_conflicts=True,
            )
        result.add(step)
        result.devices += len(uuids)
        if len(uuids) < chunk_size:
            return result


def end_active_memberships(
    *, aam_uuids: list[str], ended_at: ExpressionWrapper[CombinedExpression] | dt.datetime, now: dt.datetime
) -> LifecycleResult:
    """End the devices' active memberships at `ended_at` (never before their `datetime`).

    The caller holds the devices' locks. `ended_at` is a moment or an SQL
    expression of the membership row. Returns the memberships ended and the
    real-time destinations that got "0"s to send.
    """
    rows = list(
        Membership.objects.filter(device_id__in=aam_uuids, is_active=True)
        .order_by("device_id", "segment_id")
        .select_for_update()
        .values_list("pk", flat=True)
    )
    if not rows:
        return LifecycleResult()
    ended = Membership.objects.filter(pk__in=rows)
    end = Value(ended_at) if isinstance(ended_at, dt.datetime) else ended_at
    ended.update(
        is_active=False,
        datetime=Greatest(F("datetime"), end),
        expires_at=None,
        updated_at=timezone.now(),
    )
    exits = list(ended.values_list("device_id", "segment_id", "datetime"))
    return LifecycleResult(memberships=len(exits), destination_ids=record_exits(exits=exits, now=now))


# ---- exits ----------------------------------------------------------------------------


def record_exits(*, exits: list[tuple[str, int, dt.datetime]], now: dt.datetime) -> set[int]:
    """Log (aam_uuid, segment_id, ended at) exits as changes and queue their real-time "0"s.

    The memberships are already left. Returns the destinations given pending work.
    """
    if not exits:
        return set()
    ordered = sorted(exits, key=lambda exit_: (exit_[2], exit_[0], exit_[1]))
    MembershipChange.objects.bulk_create(
        MembershipChange(aam_uuid=aam_uuid, segment_id=segment_id, is_active=False, datetime=moment)
        for aam_uuid, segment_id, moment in ordered
    )
    changes = [Change(uuid, segment, ChangeKind.LEFT, moment, False) for uuid, segment, moment in ordered]
    return mark_pending(changes=changes, now=now)
