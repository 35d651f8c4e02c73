"""Claiming real-time work: which destinations are due, and which devices go in which request.

A claim is one transaction. It locks the oldest pending devices of a destination
with `SELECT … FOR UPDATE SKIP LOCKED`, so that concurrent claims (any number of
workers) never take the same device; builds their user objects with a handful
of set-based queries; packs them into documents of at most
`max_users_per_request` user objects; and records each document as a pending
`Delivery` that holds its devices (`in_flight_delivery`) until it ends, so that
a device's later changes wait for the earlier request (SPEC §2, order).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from django.db import transaction
from django.db.models import Min, OuterRef, Subquery

from delivery.leases import lease_until
from delivery.models import (
    Delivery,
    DeliveryDevice,
    DeliveryKind,
    DeliveryStatus,
    DestinationDevice,
    Membership,
    PartnerId,
)
from delivery.sending.documents import ACTIVE, INACTIVE, SegmentStatus, UserObject, build_document
from delivery.sending.rounds import active_mapping_values
from destinations.models import Destination


class PendingState(NamedTuple):
    """A locked pending `DestinationDevice` row, with its device's regions."""

    pk: int
    device_id: str
    pending_since: dt.datetime
    left_segment_ids: list[int]
    regions: list[int]


@dataclass
class PlannedRequest:
    """One document to be: the pending rows it takes and their user objects, in order."""

    states: list[PendingState] = field(default_factory=list)
    users: list[UserObject] = field(default_factory=list)


def claim_due_requests(*, destination: Destination, now: dt.datetime, max_requests: int) -> list[Delivery]:
    """Claim up to `max_requests` due requests of `destination` and return their pending deliveries.

    Returns [] when the destination is paused or not real-time, or nothing is due:
    a request goes out when `max_users_per_request` user objects are pending, or
    when the oldest pending device has waited `max_wait_ms` (then a partial
    request goes too). Devices with nothing to list are cleared on the way.
    """
    if not (destination.enabled and destination.realtime) or max_requests < 1:
        return []
    limit = destination.max_users_per_request
    with transaction.atomic():
        states = _lock_pending_states(destination=destination, count=max_requests * limit)
        if not states:
            return []
        today = now.astimezone(dt.UTC).date()
        users_by_device = build_user_objects(destination=destination, states=states, today=today)
        is_due_by_time = states[0].pending_since <= now - dt.timedelta(milliseconds=destination.max_wait_ms)
        planned = pack_requests(
            states=states,
            users_by_device=users_by_device,
            limit=limit,
            max_requests=max_requests,
            send_partial=is_due_by_time,
        )
        _clear_states([state.pk for state in states if not users_by_device[state.device_id]])
        return _record_deliveries(destination=destination, planned=planned, now=now)


def _lock_pending_states(*, destination: Destination, count: int) -> list[PendingState]:
    rows = (
        DestinationDevice.objects.filter(
            destination=destination, pending_since__isnull=False, in_flight_delivery__isnull=True
        )
        .order_by("pending_since", "id")
        .values_list("id", "device_id", "pending_since", "left_segment_ids", "device__regions")
        # of=("self",): lock the state rows only, never the destination or device.
        .select_for_update(skip_locked=True, of=("self",))
    )
    # Tuples, not model instances: a claim reads hundreds of rows.
    return [PendingState(*row) for row in rows[:count]]


def build_user_objects(
    *, destination: Destination, states: Sequence[PendingState], today: dt.date
) -> dict[str, list[UserObject]]:
    """Return each state's device's user objects: [] when it has no listed segment.

    Listed: active memberships of segments mapped and active on `today` ("1"), then
    the segments in `left_segment_ids` still mapped and active and not re-entered ("0"),
    each with its membership's datetime. One user object per partner ID in
    the destination's `user_dpid` namespace, or one with "" when there is none.
    """
    device_ids = [state.device_id for state in states]
    mapped = active_mapping_values(destination=destination, today=today)
    memberships = _memberships(device_ids=device_ids, segment_ids=list(mapped))
    partner_ids = PartnerId.objects.dpuuids_by_device(device_ids=device_ids, dpid=destination.user_dpid)
    users: dict[str, list[UserObject]] = {}
    for state in states:
        segments = _listed_segments(
            memberships=memberships[state.device_id], left_segment_ids=state.left_segment_ids, mapped=mapped
        )
        if not segments:
            users[state.device_id] = []
            continue
        users[state.device_id] = [
            UserObject(
                aam_uuid=state.device_id,
                partner_uuid=partner_uuid,
                regions=state.regions or [],
                segments=segments,
            )
            for partner_uuid in partner_ids.get(state.device_id, [""])
        ]
    return users


def _memberships(
    *, device_ids: list[str], segment_ids: list[int]
) -> defaultdict[str, dict[int, tuple[bool, dt.datetime]]]:
    found: defaultdict[str, dict[int, tuple[bool, dt.datetime]]] = defaultdict(dict)
    if not segment_ids:
        return found
    rows = Membership.objects.filter(device_id__in=device_ids, segment_id__in=segment_ids).values_list(
        "device_id", "segment_id", "is_active", "datetime"
    )
    for device_id, segment_id, is_active, moment in rows:
        found[device_id][segment_id] = (is_active, moment)
    return found


def _listed_segments(
    *, memberships: dict[int, tuple[bool, dt.datetime]], left_segment_ids: list[int], mapped: dict[int, str]
) -> list[SegmentStatus]:
    active = [
        SegmentStatus(mapped[segment_id], ACTIVE, moment)
        for segment_id, (is_active, moment) in sorted(memberships.items())
        if is_active
    ]
    left = [
        SegmentStatus(mapped[segment_id], INACTIVE, memberships[segment_id][1])
        for segment_id in sorted(set(left_segment_ids))
        # A left segment re-entered since is listed once, as active, above.
        if segment_id in memberships and not memberships[segment_id][0]
    ]
    return active + left


def pack_requests(
    *,
    states: Sequence[PendingState],
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
    for state in states:
        users = users_by_device[state.device_id]
        if not users:
            continue
        if current.users and len(current.users) + len(users) > limit:
            closed.append(current)
            current = PlannedRequest()
        if len(users) > limit:
            pieces = [users[start : start + limit] for start in range(0, len(users), limit)]
            if len(closed) + len(pieces) > max_requests:
                break
            closed.extend(PlannedRequest(states=[state], users=piece) for piece in pieces)
            continue
        if len(closed) >= max_requests:
            break
        current.states.append(state)
        current.users.extend(users)
    if current.users and (len(current.users) >= limit or send_partial):
        closed.append(current)
    return closed[:max_requests]


def _record_deliveries(
    *, destination: Destination, planned: list[PlannedRequest], now: dt.datetime
) -> list[Delivery]:
    if not planned:
        return []
    lease = lease_until(destination=destination, now=now)
    deliveries = [
        Delivery(
            destination=destination,
            kind=DeliveryKind.REALTIME,
            status=DeliveryStatus.PENDING,
            body=build_document(
                user_dpid=destination.user_dpid,
                client_id=destination.client_id,
                aam_destination_id=destination.aam_destination_id,
                users=request.users,
                process_time=now,
            ),
            user_count=len(request.users),
            lease_until=lease,
        )
        for request in planned
    ]
    Delivery.objects.bulk_create(deliveries)
    DeliveryDevice.objects.bulk_create(
        DeliveryDevice(delivery=delivery, aam_uuid=aam_uuid)
        for delivery, request in zip(deliveries, planned, strict=True)
        for aam_uuid in dict.fromkeys(user.aam_uuid for user in request.users)
    )
    _hold_states(deliveries=deliveries, planned=planned)
    return deliveries


def _hold_states(*, deliveries: list[Delivery], planned: list[PlannedRequest]) -> None:
    state_pks = [state.pk for request in planned for state in request.states]
    # Each device is held by the delivery carrying it (the last one, if it was split).
    holder = (
        DeliveryDevice.objects.filter(delivery__in=deliveries, aam_uuid=OuterRef("device_id"))
        .order_by("-delivery_id")
        .values("delivery_id")[:1]
    )
    DestinationDevice.objects.filter(pk__in=state_pks).update(
        in_flight_delivery_id=Subquery(holder), pending_since=None, left_segment_ids=[]
    )


def _clear_states(state_pks: list[int]) -> None:
    if state_pks:
        DestinationDevice.objects.filter(pk__in=state_pks).update(pending_since=None, left_segment_ids=[])


def next_due_at(*, destination: Destination, now: dt.datetime) -> dt.datetime | None:
    """Return when `destination` next has a request due (`now` when one is due already), or None.

    None: paused, not real-time, or nothing claimable is pending. Devices held by a
    request in flight are not counted: that request's end re-checks the destination.
    """
    if not (destination.enabled and destination.realtime):
        return None
    limit = destination.max_users_per_request
    oldest_first = (
        DestinationDevice.objects.filter(
            destination=destination, pending_since__isnull=False, in_flight_delivery__isnull=True
        )
        .order_by("pending_since")
        .values_list("pending_since", flat=True)
    )
    pending = list(oldest_first[:limit])
    if not pending:
        return None
    # Every device with something listed has at least one user object.
    if len(pending) >= limit:
        return now
    return pending[0] + dt.timedelta(milliseconds=destination.max_wait_ms)


def find_due_destination_ids(*, now: dt.datetime) -> set[int]:
    """Return the enabled real-time destinations whose oldest claimable device has waited `max_wait_ms`.

    The beat tick's safety net: it wakes destinations whose wait expired and
    paused destinations that were resumed with work accumulated.
    """
    oldest = (
        DestinationDevice.objects.filter(
            pending_since__isnull=False,
            in_flight_delivery__isnull=True,
            destination__enabled=True,
            destination__realtime=True,
        )
        .values("destination_id", "destination__max_wait_ms")
        .annotate(oldest=Min("pending_since"))
    )
    return {
        row["destination_id"]
        for row in oldest
        if row["oldest"] + dt.timedelta(milliseconds=row["destination__max_wait_ms"]) <= now
    }
