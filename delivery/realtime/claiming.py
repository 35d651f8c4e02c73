"""Claiming real-time work: which destinations are due, and which devices go in which request.

A claim is one transaction. It locks the oldest pending devices of a destination
with `SELECT … FOR UPDATE SKIP LOCKED`, so that concurrent claims (any number of
workers) never take the same device; builds their user objects with a handful
of set-based queries (`delivery.realtime.user_objects`); packs them into documents of at most
`max_users_per_request` user objects; and records each document as a pending
`Delivery` that holds its devices (`in_flight_delivery`) until it ends, so that
a device's later changes wait for the earlier request (CONTRACT §2, order).

Nothing is claimed while the destination's circuit is open or a Retry-After
holds it (`delivery.sending.circuit.is_blocked`, CONTRACT §7), except the one
request of a probe; the pending devices accumulate meanwhile, merged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import orjson
from django.db import transaction
from django.db.models import OuterRef, Subquery, TextField
from django.db.models.functions import Cast

from delivery.leases import lease_until
from delivery.models import Delivery, DestinationDevice
from delivery.realtime.recording import carry_and_hold, create_deliveries
from delivery.realtime.user_objects import PendingDestinationDevice, build_user_objects
from delivery.sending import circuit
from delivery.sending.documents import UserObject, build_document
from destinations.models import Destination


@dataclass
class PlannedRequest:
    """One document to be: the pending rows it takes and their user objects, in order."""

    destination_devices: list[PendingDestinationDevice] = field(default_factory=list)
    users: list[UserObject] = field(default_factory=list)


def claim_due_requests(
    *, destination: Destination, now: dt.datetime, max_requests: int, probe: bool = False
) -> list[Delivery]:
    """Claim up to `max_requests` due requests of `destination` and return their pending deliveries.

    Returns [] when the destination is paused or not real-time, its circuit is open or
    held, or nothing is due: a request goes out when `max_users_per_request` user objects
    are pending, or when the oldest pending device has waited `max_wait_ms` (then a
    partial request goes too). Devices with nothing to list are cleared on the way.
    `probe`: the circuit's probe, which claims whatever is pending, oldest first, however
    open the circuit.
    """
    if not _may_claim(destination=destination, now=now, max_requests=max_requests, probe=probe):
        return []
    limit = destination.max_users_per_request
    with transaction.atomic():
        destination_devices = _lock_pending_destination_devices(
            destination=destination, count=max_requests * limit
        )
        if not destination_devices:
            return []
        users_by_device = build_user_objects(
            destination=destination, destination_devices=destination_devices, now=now
        )
        is_due_by_time = probe or destination_devices[0].pending_since <= now - dt.timedelta(
            milliseconds=destination.max_wait_ms
        )
        planned = pack_requests(
            destination_devices=destination_devices,
            users_by_device=users_by_device,
            limit=limit,
            max_requests=max_requests,
            send_partial=is_due_by_time,
        )
        _clear_pending_marks(
            [dd.pk for dd in destination_devices if not users_by_device[dd.device_id]]
        )
        return _record_deliveries(destination=destination, planned=planned, now=now)


def _may_claim(*, destination: Destination, now: dt.datetime, max_requests: int, probe: bool) -> bool:
    """Enabled, real-time, and its circuit closed and not held (re-read: another worker may open it)."""
    if not (destination.enabled and destination.realtime) or max_requests < 1:
        return False
    circuit.refresh_circuit(destination)
    return probe or not circuit.is_blocked(destination, now=now)


def _lock_pending_destination_devices(
    *, destination: Destination, count: int
) -> list[PendingDestinationDevice]:
    rows = (
        DestinationDevice.objects.filter(
            destination=destination, pending_since__isnull=False, in_flight_delivery__isnull=True
        )
        .order_by("pending_since", "id")
        # The two JSON columns as text, parsed by orjson: JSONField's stdlib decoding of two small
        # arrays a row was 7 % of a worker's CPU (py-spy --gil, 10 users a request).
        .annotate(left_json=Cast("left_segment_ids", TextField()),
                  regions_json=Cast("device__regions", TextField()))
        .values_list("id", "device_id", "pending_since", "left_json", "regions_json")
        # of=("self",): lock the destination device rows only, never the destination or device.
        .select_for_update(skip_locked=True, of=("self",))
    )
    # Tuples, not model instances: a claim reads hundreds of rows. pending_since is not null (filtered).
    return [
        PendingDestinationDevice(pk, device_id, cast(dt.datetime, since), orjson.loads(left),
                                 orjson.loads(regions))
        for pk, device_id, since, left, regions in rows[:count]
    ]


def pack_requests(
    *,
    destination_devices: Sequence[PendingDestinationDevice],
    users_by_device: dict[str, list[UserObject]],
    limit: int,
    max_requests: int,
    send_partial: bool,
) -> list[PlannedRequest]:
    """Pack devices, in order, into at most `max_requests` requests of at most `limit` user objects.

    A device is never split across requests unless it alone has more than `limit`
    user objects. The last, incomplete request is kept only when `send_partial`.
    """
    closed: list[PlannedRequest] = []
    current = PlannedRequest()
    for destination_device in destination_devices:
        users = users_by_device[destination_device.device_id]
        if not users:
            continue
        if current.users and len(current.users) + len(users) > limit:
            closed.append(current)
            current = PlannedRequest()
        if len(users) > limit:
            pieces = [users[start : start + limit] for start in range(0, len(users), limit)]
            if len(closed) + len(pieces) > max_requests:
                break
            closed.extend(
                PlannedRequest(destination_devices=[destination_device], users=piece) for piece in pieces
            )
            continue
        if len(closed) >= max_requests:
            break
        current.destination_devices.append(destination_device)
        current.users.extend(users)
    if current.users and (len(current.users) >= limit or send_partial):
        closed.append(current)
    return closed[:max_requests]


def _record_deliveries(
    *, destination: Destination, planned: list[PlannedRequest], now: dt.datetime
) -> list[Delivery]:
    if not planned:
        return []
    deliveries = create_deliveries(
        destination=destination,
        bodies=[
            build_document(
                user_dpid=destination.user_dpid,
                client_id=destination.client_id,
                aam_destination_id=destination.aam_destination_id,
                users=request.users,
                process_time=now,
            )
            for request in planned
        ],
        user_counts=[len(request.users) for request in planned],
        lease=lease_until(destination=destination, now=now),
    )
    carry_and_hold(
        deliveries=deliveries,
        requests=[(request.destination_devices, request.users) for request in planned],
        now=now,
    )
    return deliveries


def _clear_pending_marks(destination_device_pks: list[int]) -> None:
    if destination_device_pks:
        DestinationDevice.objects.filter(pk__in=destination_device_pks).update(
            pending_since=None, left_segment_ids=[]
        )


def next_due_at(*, destination: Destination, now: dt.datetime) -> dt.datetime | None:
    """Return when `destination` next has a request due (`now` when one is due already), or None.

    None: paused, not real-time, its circuit open (its probe wakes it), or nothing
    claimable is pending. Devices held by a request in flight are not counted: that
    request's end re-checks the destination. A Retry-After hold puts it off to the hold's end.
    """
    if not (destination.enabled and destination.realtime) or circuit.is_open(destination):
        return None
    limit = destination.max_users_per_request
    oldest_first = (
        DestinationDevice.objects.filter(
            destination=destination, pending_since__isnull=False, in_flight_delivery__isnull=True
        )
        .order_by("pending_since")
        .values_list("pending_since", flat=True)
    )
    pending = [since for since in oldest_first[:limit] if since is not None]  # all are: filtered
    if not pending:
        return None
    # Every device with something listed has at least one user object.
    due = now if len(pending) >= limit else pending[0] + dt.timedelta(milliseconds=destination.max_wait_ms)
    if circuit.is_held(destination, now=now) and destination.hold_until is not None:
        return max(due, destination.hold_until)
    return due


def find_due_destination_ids(*, now: dt.datetime) -> set[int]:
    """Return the enabled real-time destinations whose oldest claimable device has waited `max_wait_ms`.

    The beat tick's safety net: it wakes destinations whose wait expired and
    paused destinations that were resumed with work accumulated. One probe of the
    claimable index per destination (its oldest row), never an aggregate over the
    backlog: the tick runs every second, and a resync of a million devices must not
    make each tick read a million rows (434 ms → 0.2 ms with 120,000 pending).
    Destinations whose circuit is open or held are left out: their probe or the hold's end
    wakes them.
    """
    oldest = (
        DestinationDevice.objects.filter(
            destination=OuterRef("pk"), pending_since__isnull=False, in_flight_delivery__isnull=True
        )
        .order_by("pending_since")
        .values("pending_since")[:1]
    )
    rows = (
        Destination.objects.filter(circuit.sendable(), enabled=True, realtime=True)
        .annotate(oldest=Subquery(oldest))
        .filter(oldest__isnull=False)
        .values_list("pk", "max_wait_ms", "oldest")
    )
    return {
        destination_id
        for destination_id, max_wait_ms, since in rows
        if since + dt.timedelta(milliseconds=max_wait_ms) <= now
    }
