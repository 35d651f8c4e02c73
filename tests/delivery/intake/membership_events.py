"""Events and rows for the membership tests, which run with the clock frozen at NOW."""

from __future__ import annotations

import datetime as dt

from delivery.intake.events import Event, EventType
from delivery.models import DestinationDevice, Membership, MembershipChange

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
UUID = "19393572368547369350319949416899715727"


def at(minutes: float) -> dt.datetime:
    return NOW - dt.timedelta(hours=1) + dt.timedelta(minutes=minutes)


def qualify(segment_id: int, *, when: dt.datetime, uuid: str = UUID, regions=(), onboarded=False) -> Event:
    return Event(type=EventType.QUALIFICATION, aam_uuid=uuid, datetime=when, segment_id=segment_id,
                 regions=tuple(regions), onboarded=onboarded)


def disqualify(segment_id: int, *, when: dt.datetime, uuid: str = UUID, onboarded=False) -> Event:
    return Event(type=EventType.DISQUALIFICATION, aam_uuid=uuid, datetime=when, segment_id=segment_id,
                 onboarded=onboarded)


def opt_out(*, when: dt.datetime, uuid: str = UUID) -> Event:
    return Event(type=EventType.OPT_OUT, aam_uuid=uuid, datetime=when)


def id_sync(dpid: int, dpuuid: str, *, when: dt.datetime, uuid: str = UUID) -> Event:
    return Event(type=EventType.ID_SYNC, aam_uuid=uuid, datetime=when, dpid=dpid, dpuuid=dpuuid)


def membership(segment_id: int, uuid: str = UUID) -> Membership:
    return Membership.objects.get(device_id=uuid, segment_id=segment_id)


def pair(destination, uuid: str = UUID) -> DestinationDevice:
    return DestinationDevice.objects.get(destination=destination, device_id=uuid)


def changes() -> list[tuple[str, int, bool, dt.datetime, bool]]:
    return list(MembershipChange.objects.values_list("aam_uuid", "segment_id", "is_active", "datetime",
                                                     "is_onboarded"))
