"""Forgetting devices (CONTRACT §4): after an opt-out, or 120 days without a sighting.

A `DeviceErasure` row asks for it: ingestion writes one for each known device
that opts out (`delivery.intake.membership.apply_events`), the inactivity sweep one
for each inactive device (`delivery.lifecycle.expiry`). Both have already ended the
device's memberships, logged the exits and queued the real-time "0"s.

The "0"s need the device: a real-time claim builds them from its memberships,
partner IDs and regions. So erasure waits until they are built and sent:
- no real-time destination still has the device pending (paused destinations
  included: their work goes out on resume), unless the request is older than
  `ERASURE_DEADLINE`, after which privacy wins over a destination kept paused;
- no pending delivery carries it (its retries must send the same bytes).
Batch destinations are not waited for: what their next batch needs (the
device's exits since their cut-off, partner IDs, regions) is captured first as
`BatchExit` rows, which `delivery.batch.transfers` sends.

Erasing deletes the device, its memberships, partner IDs, real-time states and
change log, and rewrites every ended delivery that carried it without its user
objects (`User_count` fixed, `DeliveryDevice` rows deleted). A later event for
that AAM UUID starts from nothing.

An opt-out is final until the erasure: should events re-activate a segment in
between, those memberships are ended again (now) and the erasure waits for
those "0"s too. An inactive device seen again is not forgotten.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import QuerySet

from delivery import dialect
from delivery.lifecycle.expiry import INACTIVITY, end_active_memberships
from delivery.lifecycle.stored_documents import (
    lock_ended_deliveries,
    remove_carried_exits,
    remove_from_documents,
)
from delivery.models import (
    BatchExit,
    DeliveryDevice,
    DeliveryStatus,
    DestinationDevice,
    Device,
    DeviceErasure,
    ErasureReason,
    Membership,
    MembershipChange,
    PartnerId,
)
from destinations.models import Destination, Mapping

CHUNK_SIZE = 500
# GDPR's one month: past this, a device still pending at a paused destination is erased anyway.
ERASURE_DEADLINE = dt.timedelta(days=30)
# Advisory lock namespace shared with batch cuts (`delivery.batch.transfers.lock_batch_cut`).
BATCH_CUT_LOCK = 0x6161_6D64 << 32


@dataclass
class ErasureResult:
    erased: int = 0
    waiting: int = 0  # devices whose "0"s are not out yet
    cancelled: int = 0  # inactive devices seen again, or devices already gone
    documents: int = 0  # stored documents rewritten without an erased device
    destination_ids: set[int] = field(default_factory=set)  # real-time work queued by re-ended memberships


def batch_cut_lock_key(destination_id: int) -> int:
    """The advisory lock a batch cut holds exclusively and an erasure shares (PostgreSQL)."""
    return BATCH_CUT_LOCK | (destination_id & 0xFFFF_FFFF)


def erase_forgotten_devices(*, now: dt.datetime, chunk_size: int = CHUNK_SIZE) -> ErasureResult:
    """Erase the requested devices whose "0"s are out; return what was done and what waits."""
    result = ErasureResult()
    after_id = 0
    while True:
        waiting = DeviceErasure.objects.filter(id__gt=after_id).order_by("id")
        requests = list(waiting.values_list("id", "aam_uuid")[:chunk_size])
        if not requests:
            break
        after_id = requests[-1][0]
        with transaction.atomic():
            _erase_chunk([uuid for _, uuid in requests], now=now, result=result)
    result.documents += remove_carried_exits()
    # Exits owed to a destination whose batch mode was turned off: no batch will carry them.
    BatchExit.objects.filter(delivery__isnull=True, destination__batch_interval_hours__isnull=True).delete()
    return result


def _erase_chunk(uuids: list[str], *, now: dt.datetime, result: ErasureResult) -> None:
    locked = _lock_devices(uuids)
    requests = _lock_requests(uuids, locked=set(locked))
    cancelled = _cancel_requests(requests, locked=locked, now=now)
    result.cancelled += len(cancelled)
    candidates = sorted(set(locked) & set(requests) - cancelled)
    reactivated = _end_reactivated(candidates, now=now, result=result)
    delivery_ids = lock_ended_deliveries(candidates)
    blocked = reactivated | _blocked(candidates, requests=requests, now=now)
    ready = [uuid for uuid in candidates if uuid not in blocked]
    if ready and not _share_batch_cut_locks():
        ready = []  # a batch is being cut: erase once its cut-off is known
    result.waiting += len(candidates) - len(ready)
    if ready:
        capture_batch_exits(ready)
        result.documents += remove_from_documents(delivery_ids=delivery_ids, uuids=ready)
        _delete_device_data(ready)
        result.erased += len(ready)


def _lock_devices(uuids: list[str]) -> dict[str, dt.datetime]:
    """Lock the devices first, as ingestion does, skipping those it holds (next round).

    Returns aam_uuid → last_seen of the devices locked.
    """
    return dict(
        Device.objects.filter(aam_uuid__in=uuids)
        .order_by("aam_uuid")
        .select_for_update(skip_locked=True)
        .values_list("aam_uuid", "last_seen")
    )


def _lock_requests(uuids: list[str], *, locked: set[str]) -> dict[str, DeviceErasure]:
    """Lock the requests this run may act on: its locked devices', and those of devices already gone."""
    absent = set(uuids) - set(Device.objects.filter(aam_uuid__in=uuids).values_list("aam_uuid", flat=True))
    requests = DeviceErasure.objects.filter(aam_uuid__in=locked | absent).select_for_update().order_by("id")
    return {request.aam_uuid: request for request in requests}


def _cancel_requests(requests: dict[str, DeviceErasure], *, locked: dict[str, dt.datetime],
                     now: dt.datetime) -> set[str]:
    """Delete the requests of devices gone and of inactive devices seen again; return their aam_uuids."""
    absent = set(requests) - set(locked)
    # Checked again under the request's lock: a device may have come back meanwhile.
    still_here = Device.objects.filter(aam_uuid__in=absent).values_list("aam_uuid", flat=True)
    gone = absent - set(still_here)
    seen_again = {
        uuid for uuid, request in requests.items()
        if uuid in locked and request.reason == ErasureReason.INACTIVITY and locked[uuid] > now - INACTIVITY
    }
    DeviceErasure.objects.filter(aam_uuid__in=gone | seen_again).delete()
    return gone | seen_again


def _end_reactivated(uuids: list[str], *, now: dt.datetime, result: ErasureResult) -> set[str]:
    """End memberships re-activated since the request; return the devices that had some."""
    active = set(
        Membership.objects.filter(device_id__in=uuids, is_active=True).values_list("device_id", flat=True)
    )
    if active:
        step = end_active_memberships(aam_uuids=sorted(active), ended_at=now, now=now)
        result.destination_ids |= step.destination_ids
    return active


def _blocked(uuids: list[str], *, requests: dict[str, DeviceErasure], now: dt.datetime) -> set[str]:
    """The devices whose "0"s are still to be built or sent."""
    overdue = {uuid for uuid in uuids if requests[uuid].requested_at <= now - ERASURE_DEADLINE}
    pending_realtime = set(
        DestinationDevice.objects.filter(
            device_id__in=[uuid for uuid in uuids if uuid not in overdue],
            pending_since__isnull=False,
            destination__realtime=True,
        ).values_list("device_id", flat=True)
    )
    return pending_realtime | _in_pending_deliveries(uuids)


def _in_pending_deliveries(uuids: Iterable[str]) -> set[str]:
    return set(
        DeliveryDevice.objects.filter(aam_uuid__in=list(uuids), delivery__status=DeliveryStatus.PENDING)
        .values_list("aam_uuid", flat=True)
    )


def _share_batch_cut_locks() -> bool:
    """Hold every batch destination's cut lock, shared, until commit; False if a cut holds one."""
    keys = [batch_cut_lock_key(pk) for pk in _batch_destinations().values_list("pk", flat=True)]
    return dialect.try_advisory_xact_locks_shared(keys)


def _batch_destinations() -> QuerySet[Destination]:
    return Destination.objects.filter(batch_interval_hours__isnull=False, batch_cutoff_seq__isnull=False)


# ---- capturing what batches still need -------------------------------------------------


def capture_batch_exits(uuids: list[str]) -> int:
    """Write, per batch destination, the exits of `uuids` its next batch would have carried.

    Those are the device's latest change per mapped segment since the
    destination's cut-off, all exits once its memberships are ended, with its
    partner IDs in the destination's namespace and its regions. Returns the
    number of `BatchExit` rows written.
    """
    regions = dict(Device.objects.filter(aam_uuid__in=uuids).values_list("aam_uuid", "regions"))
    written = 0
    for destination in _batch_destinations().order_by("pk"):
        mapped = list(Mapping.objects.filter(destination=destination).values_list("segment_id", flat=True))
        latest: dict[str, dict[int, tuple[bool, dt.datetime]]] = defaultdict(dict)
        changes = MembershipChange.objects.filter(
            aam_uuid__in=uuids, id__gt=destination.batch_cutoff_seq, segment_id__in=mapped
        ).order_by("id")
        for uuid, segment_id, is_active, moment in changes.values_list("aam_uuid", "segment_id", "is_active",
                                                                     "datetime"):
            latest[uuid][segment_id] = (is_active, moment)
        partner_uuids = PartnerId.objects.dpuuids_by_device(
            device_ids=list(latest), dpid=destination.user_dpid
        )
        exits = [
            BatchExit(
                destination=destination,
                aam_uuid=uuid,
                partner_uuids=partner_uuids.get(uuid, []),
                regions=regions.get(uuid) or [],
                segments=[[segment_id, moment.isoformat()]
                          for segment_id, (is_active, moment) in sorted(segments.items()) if not is_active],
            )
            for uuid, segments in latest.items()
        ]
        written += len(BatchExit.objects.bulk_create([exit_ for exit_ in exits if exit_.segments]))
    return written


def _delete_device_data(uuids: list[str]) -> None:
    MembershipChange.objects.filter(aam_uuid__in=uuids).delete()
    PartnerId.objects.filter(device_id__in=uuids).delete()
    Membership.objects.filter(device_id__in=uuids).delete()
    DestinationDevice.objects.filter(device_id__in=uuids).delete()
    Device.objects.filter(aam_uuid__in=uuids).delete()
    DeviceErasure.objects.filter(aam_uuid__in=uuids).delete()
