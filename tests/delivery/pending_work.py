"""Rows for the sender's tests: devices with memberships, partner IDs and real-time pending marks.

The sender's tests create these rows directly (as `delivery.intake.membership` would)
so that claiming and sending are tested alone.
"""

from __future__ import annotations

import datetime as dt

from delivery.models import DestinationDevice, Device, Membership, PartnerId
from destinations.models import Destination, Mapping
from tests.factories import MappingFactory, SegmentFactory

MOMENT = dt.datetime(2016, 7, 27, 16, 17, 22, tzinfo=dt.UTC)
# The segments the delivery tests map (the ids of the contract's examples).
SPORTS, NEWS, OLD = 14356, 12176, 10329


def map_segments(destination: Destination, *segment_ids: int, **dates: dt.date | None) -> list[Mapping]:
    """Map each segment to the destination (active from long ago unless `start_date` says otherwise)."""
    dates.setdefault("start_date", dt.date(2000, 1, 1))
    return [
        MappingFactory(destination=destination, segment=SegmentFactory(id=segment_id), **dates)
        for segment_id in segment_ids
    ]


def pending_device(
    destination: Destination,
    aam_uuid: str,
    *,
    pending_since: dt.datetime,
    active: tuple[int, ...] = (),
    left: tuple[int, ...] = (),
    partner_ids: tuple[str, ...] = (),
    regions: tuple[int, ...] = (),
    moment: dt.datetime = MOMENT,
) -> DestinationDevice:
    """A device active in `active`, having left `left`, pending for `destination` since `pending_since`."""
    device, _ = Device.objects.get_or_create(
        aam_uuid=aam_uuid, defaults={"last_seen": moment, "regions": list(regions)}
    )
    for segment_id in active:
        SegmentFactory(id=segment_id)
        Membership.objects.update_or_create(
            device=device,
            segment_id=segment_id,
            defaults={"is_active": True, "datetime": moment, "qualified_at": moment},
        )
    for segment_id in left:
        SegmentFactory(id=segment_id)
        Membership.objects.update_or_create(
            device=device, segment_id=segment_id, defaults={"is_active": False, "datetime": moment}
        )
    for dpuuid in partner_ids:
        PartnerId.objects.get_or_create(device=device, dpid=destination.user_dpid, dpuuid=dpuuid)
    state, _ = DestinationDevice.objects.update_or_create(
        destination=destination,
        device=device,
        defaults={"pending_since": pending_since, "left_segment_ids": list(left)},
    )
    return state


def pending_devices(
    destination: Destination, count: int, *, pending_since: dt.datetime, segment_id: int, prefix: str = "dev"
) -> list[DestinationDevice]:
    """`count` devices active in one segment, pending one microsecond apart (so their order is fixed)."""
    return [
        pending_device(
            destination,
            f"{prefix}-{index:03d}",
            pending_since=pending_since + dt.timedelta(microseconds=index),
            active=(segment_id,),
        )
        for index in range(count)
    ]
