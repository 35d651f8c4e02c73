"""Memberships and their exits, for the expiry and inactivity tests (the clock stands at T0)."""

from __future__ import annotations

import datetime as dt

from delivery.models import Membership, MembershipChange
from destinations.models import Segment
from tests.factories import SegmentFactory

T0 = dt.datetime(2026, 1, 10, 15, 30, tzinfo=dt.UTC)
UUID = "19393572368547369350319949416899715727"


def set_ttl(segment_id: int, ttl_days: int) -> None:
    SegmentFactory(id=segment_id)
    Segment.objects.filter(pk=segment_id).update(ttl_days=ttl_days)


def membership(segment_id: int, uuid: str = UUID) -> Membership:
    return Membership.objects.get(device_id=uuid, segment_id=segment_id)


def exits() -> list[tuple[str, int, bool, dt.datetime]]:
    return list(MembershipChange.objects.filter(is_active=False)
                .values_list("aam_uuid", "segment_id", "is_active", "datetime"))
