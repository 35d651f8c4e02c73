"""Resync (CONTRACT §7): pending marks for every device a destination should hear about again.

A resync is the real-time path started by an operator instead of an event: it sets the pending
mark of each chosen device's `DestinationDevice` row, and the normal flush (`delivery.realtime.
flush`) claims them and sends what `delivery.realtime.user_objects` lists for them then, the
device's current full state: every active mapped segment as "1" (plus the "0"s still owed).
Nothing is built here and nothing is sent twice at once: a device held by a request in flight
is marked too, and the claim skips it until that request has ended (per-device order, §2).

Which devices:
- every device with an active, unexpired membership in a segment whose mapping to the
  destination is active today (UTC); or
- with `since`: the devices carried by the destination's deliveries that failed (`finished_at`
  at or after `since`; test documents aside) and still exist.

The 3-day refresh rule does not apply: a resync marks a device sent a minute ago too.

Bounded work: devices are taken in keyset order (`aam_uuid`), `chunk_size` at a time, one
short transaction per chunk, each committed before the next is read, so that a million devices
never hold a transaction (or a lock) for more than a chunk. Locks follow every writer's order
(DESIGN.md "Membership rules"): the chunk's devices in `aam_uuid` order, then the destination's
`DestinationDevice` rows in `device_id` order; a new row is created only under its device's
lock, as `delivery.intake.pending_marks` does. Marking is idempotent (an existing pending mark
keeps its time), and `ResyncProgress.after` says where a resync stopped, so that a retried one
goes on from there instead of marking again devices already sent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet

from delivery.models import (
    DeliveryDevice,
    DeliveryKind,
    DeliveryStatus,
    DestinationDevice,
    Device,
    Membership,
)
from destinations.models import Destination, Mapping

CHUNK_SIZE = 5_000


@dataclass
class ResyncProgress:
    """How far a resync got: the last `aam_uuid` of the last committed chunk, and the devices marked."""

    after: str = ""
    devices: int = 0
    chunks: int = 0


def count_resync_devices(*, destination: Destination, since: dt.datetime | None, now: dt.datetime) -> int:
    """How many devices a resync of `destination` would mark now (the API's `devices`)."""
    if since is None:
        return _mapped_devices(destination=destination, now=now).count()
    return _failed_devices(destination=destination, since=since).count()


def mark_for_resync(
    *,
    destination: Destination,
    since: dt.datetime | None,
    now: dt.datetime,
    progress: ResyncProgress,
    chunk_size: int = CHUNK_SIZE,
    on_chunk: Callable[[], object] | None = None,
) -> ResyncProgress:
    """Mark the resync's devices pending at `destination`, chunk by chunk, from `progress.after` on.

    `progress` is updated as each chunk commits (so, when this raises, it says what stands);
    `on_chunk` runs after each commit (the caller wakes the destination there, so sending
    starts while later chunks are marked). Returns `progress`.
    """
    while True:
        with transaction.atomic():
            device_ids = _next_device_ids(
                destination=destination, since=since, now=now, after=progress.after, limit=chunk_size
            )
            if not device_ids:
                return progress
            marked = _mark_chunk(destination_id=destination.pk, device_ids=device_ids, now=now)
        progress.after, progress.devices, progress.chunks = (
            device_ids[-1], progress.devices + marked, progress.chunks + 1
        )
        if on_chunk is not None:
            on_chunk()


def _next_device_ids(
    *, destination: Destination, since: dt.datetime | None, now: dt.datetime, after: str, limit: int
) -> list[str]:
    if since is None:
        chosen = _mapped_devices(destination=destination, now=now)
    else:
        chosen = _failed_devices(destination=destination, since=since)
    ordered = chosen.filter(aam_uuid__gt=after).order_by("aam_uuid")
    return list(ordered.values_list("aam_uuid", flat=True)[:limit])


def _mapped_devices(*, destination: Destination, now: dt.datetime) -> QuerySet[Device]:
    """Devices with an active, unexpired membership of a segment mapped to `destination` today (UTC).

    Read in `aam_uuid` order along the device's primary key, each probed through the
    membership's unique (device, segment) index: a chunk costs its own devices, however
    many segments are mapped.
    """
    segment_ids = list(
        Mapping.objects.filter(destination=destination)
        .active_on(now.astimezone(dt.UTC).date())
        .values_list("segment_id", flat=True)
    )
    listed = Membership.objects.filter(
        device_id=OuterRef("aam_uuid"), segment_id__in=segment_ids, is_active=True
    ).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
    return Device.objects.filter(Exists(listed))


def _failed_devices(*, destination: Destination, since: dt.datetime) -> QuerySet[Device]:
    """Existing devices carried by `destination`'s deliveries that failed at or after `since`."""
    carried = DeliveryDevice.objects.filter(
        aam_uuid=OuterRef("aam_uuid"),
        delivery__destination=destination,
        delivery__status=DeliveryStatus.FAILED,
        delivery__finished_at__gte=since,
    ).exclude(delivery__kind=DeliveryKind.TEST)
    return Device.objects.filter(Exists(carried))


def _mark_chunk(*, destination_id: int, device_ids: list[str], now: dt.datetime) -> int:
    """Mark the chunk's devices pending at the destination, under their locks; return how many."""
    # Devices first, in aam_uuid order, as every writer does; a device erased meanwhile drops out.
    locked = list(
        Device.objects.select_for_update().filter(aam_uuid__in=device_ids)
        .order_by("aam_uuid").values_list("aam_uuid", flat=True)
    )
    existing = dict(
        DestinationDevice.objects.select_for_update()
        .filter(destination_id=destination_id, device_id__in=locked)
        .order_by("device_id")
        .values_list("device_id", "pending_since")
    )
    # A pending mark keeps its time: the device keeps its place in the destination's queue.
    DestinationDevice.objects.filter(
        destination_id=destination_id,
        device_id__in=[device_id for device_id, since in existing.items() if since is None],
    ).update(pending_since=now)
    DestinationDevice.objects.bulk_create(
        DestinationDevice(destination_id=destination_id, device_id=device_id, pending_since=now)
        for device_id in locked
        if device_id not in existing
    )
    return len(locked)
