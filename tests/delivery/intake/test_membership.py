"""delivery.intake.membership: events applied to devices, memberships and the change log; opt-outs."""

from __future__ import annotations

import datetime as dt

import pytest

from delivery.intake.membership import apply_events, apply_opt_outs
from delivery.intake.merging import compute_expires_at
from delivery.models import DestinationDevice, Device, Membership, PartnerId
from destinations.models import Segment
from tests.delivery.intake.membership_events import (
    NOW,
    UUID,
    at,
    changes,
    disqualify,
    id_sync,
    membership,
    opt_out,
    pair,
    qualify,
)
from tests.factories import MappingFactory, SegmentFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clock")]
T0 = NOW  # where the clock stands: factories date mappings then


# ---- TTL -------------------------------------------------------------------------------


def test_a_membership_expires_ttl_days_times_24_hours_after_its_qualification():
    assert compute_expires_at(qualified_at=NOW, ttl_days=120) == NOW + dt.timedelta(hours=120 * 24)


def test_a_one_day_ttl_ends_at_midnight_utc_two_days_after_the_qualification_date():
    late = dt.datetime(2026, 3, 10, 23, 59, tzinfo=dt.UTC)
    early_in_another_zone = dt.datetime(2026, 3, 11, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=3)))

    assert compute_expires_at(qualified_at=late, ttl_days=1) == dt.datetime(2026, 3, 12, tzinfo=dt.UTC)
    # 01:00 at UTC+3 is 22:00 UTC on the 10th.
    assert compute_expires_at(qualified_at=early_in_another_zone, ttl_days=1) == dt.datetime(
        2026, 3, 12, tzinfo=dt.UTC
    )


def test_a_zero_ttl_never_expires():
    assert compute_expires_at(qualified_at=NOW, ttl_days=0) is None


# ---- devices, segments, partner IDs ---------------------------------------------------------


def test_a_qualification_creates_the_device_the_segment_and_an_active_membership():
    apply_events(events=[qualify(14356, when=at(1), regions=[9])], now=NOW)

    device = Device.objects.get()
    assert (device.aam_uuid, device.last_seen, device.regions) == (UUID, at(1), [9])
    assert Segment.objects.get().ttl_days == 120
    stored = membership(14356)
    assert (stored.is_active, stored.datetime, stored.qualified_at) == (True, at(1), at(1))
    assert stored.expires_at == at(1) + dt.timedelta(days=120)
    assert changes() == [(UUID, 14356, True, at(1), False)]


def test_the_segments_own_ttl_sets_the_expiry():
    SegmentFactory(id=5, ttl_days=0)
    SegmentFactory(id=6, ttl_days=1)

    apply_events(events=[qualify(5, when=at(1)), qualify(6, when=at(1))], now=NOW)

    assert membership(5).expires_at is None
    assert membership(6).expires_at == dt.datetime(2026, 3, 12, tzinfo=dt.UTC)
    assert Segment.objects.get(id=6).ttl_days == 1


def test_last_seen_is_the_latest_event_and_regions_are_a_sorted_union():
    Device.objects.create(aam_uuid=UUID, last_seen=at(30), regions=[9])

    apply_events(events=[qualify(1, when=at(10), regions=[6, 3]), qualify(2, when=at(20), regions=[9, 11])],
                 now=NOW)

    device = Device.objects.get()
    assert device.last_seen == at(30)
    assert device.regions == [3, 6, 9, 11]

    apply_events(events=[id_sync(20914, "gaid", when=at(40))], now=NOW)

    assert Device.objects.get().last_seen == at(40)


def test_an_id_sync_adds_a_partner_id_once():
    events = [id_sync(20914, "gaid-1", when=at(1)), id_sync(20914, "gaid-1", when=at(2)),
              id_sync(20915, "idfa-1", when=at(3))]

    apply_events(events=events, now=NOW)
    apply_events(events=events[:1], now=NOW)

    assert sorted(PartnerId.objects.values_list("device_id", "dpid", "dpuuid")) == [
        (UUID, 20914, "gaid-1"), (UUID, 20915, "idfa-1")
    ]


# ---- merging -------------------------------------------------------------------------


def test_events_given_out_of_order_merge_by_datetime():
    apply_events(events=[disqualify(7, when=at(20)), qualify(7, when=at(10)), qualify(8, when=at(30)),
                         disqualify(8, when=at(5))], now=NOW)

    assert (membership(7).is_active, membership(7).datetime) == (False, at(20))
    assert membership(7).expires_at is None
    assert (membership(8).is_active, membership(8).datetime) == (True, at(30))
    # The log follows the order the changes took effect in.
    assert changes() == [(UUID, 7, True, at(10), False), (UUID, 7, False, at(20), False),
                         (UUID, 8, True, at(30), False)]


def test_a_disqualification_wins_a_tie():
    apply_events(events=[disqualify(7, when=at(10)), qualify(7, when=at(10))], now=NOW)

    assert membership(7).is_active is False

    apply_events(events=[qualify(9, when=at(10))], now=NOW)
    apply_events(events=[disqualify(9, when=at(10))], now=NOW)
    apply_events(events=[qualify(9, when=at(10))], now=NOW)

    assert membership(9).is_active is False


def test_an_event_older_than_the_membership_changes_nothing():
    apply_events(events=[qualify(7, when=at(10))], now=NOW)

    result = apply_events(events=[disqualify(7, when=at(5)), qualify(7, when=at(9))], now=NOW)

    assert (membership(7).is_active, membership(7).datetime) == (True, at(10))
    assert result.changes == 0
    assert len(changes()) == 1


def test_a_requalification_refreshes_the_membership_and_is_logged():
    apply_events(events=[qualify(7, when=at(10))], now=NOW)

    apply_events(events=[qualify(7, when=at(50))], now=NOW)

    stored = membership(7)
    assert (stored.is_active, stored.datetime, stored.qualified_at) == (True, at(50), at(50))
    assert stored.expires_at == at(50) + dt.timedelta(days=120)
    assert changes() == [(UUID, 7, True, at(10), False), (UUID, 7, True, at(50), False)]


def test_leaving_a_segment_the_device_was_never_in_does_nothing():
    destination = MappingFactory(segment=SegmentFactory(id=7)).destination

    result = apply_events(events=[disqualify(7, when=at(1))], now=NOW)

    # Only the disqualification's datetime is kept (see the arrival-order tests below).
    stored = membership(7)
    assert (stored.is_active, stored.datetime, stored.qualified_at, stored.expires_at) == (
        False, at(1), None, None
    )
    assert changes() == []
    assert result.destination_ids == set()
    assert not DestinationDevice.objects.filter(destination=destination).exists()


def test_an_older_qualification_arriving_after_a_disqualification_logs_that_exit_once():
    # Issue 10: Q@1 then D@2 sends "0"; D@2 then Q@1 must too (the same events, another order).
    destination = MappingFactory(segment=SegmentFactory(id=7)).destination
    apply_events(events=[disqualify(7, when=at(2))], now=NOW)

    result = apply_events(events=[qualify(7, when=at(1))], now=NOW + dt.timedelta(seconds=1))

    stored = membership(7)
    assert (stored.is_active, stored.datetime, stored.qualified_at) == (False, at(2), at(1))
    assert changes() == [(UUID, 7, False, at(2), False)]
    assert result.destination_ids == {destination.id}
    assert pair(destination).left_segment_ids == [7]

    # Once only: an even older qualification, or the same again, changes nothing.
    result = apply_events(events=[qualify(7, when=at(0)), qualify(7, when=at(1))],
                          now=NOW + dt.timedelta(seconds=2))
    assert result.changes == 0

    # A newer qualification enters normally.
    result = apply_events(events=[qualify(7, when=at(3))], now=NOW + dt.timedelta(seconds=3))

    stored = membership(7)
    assert (stored.is_active, stored.datetime, stored.qualified_at) == (True, at(3), at(3))
    assert changes()[-1] == (UUID, 7, True, at(3), False)


def test_a_late_onboarded_qualification_logs_the_exit_for_batches_only():
    destination = MappingFactory(segment=SegmentFactory(id=7)).destination
    apply_events(events=[disqualify(7, when=at(2))], now=NOW)

    result = apply_events(events=[qualify(7, when=at(1), onboarded=True)], now=NOW + dt.timedelta(seconds=1))

    assert changes() == [(UUID, 7, False, at(2), True)]
    assert result.destination_ids == set()
    assert not DestinationDevice.objects.filter(destination=destination).exists()


def test_an_inactive_membership_keeps_a_later_disqualifications_datetime():
    segment = SegmentFactory(id=7)
    apply_events(events=[qualify(7, when=at(0)), disqualify(7, when=at(0))], now=NOW)
    assert membership(7).is_active is False
    destination = MappingFactory(segment=segment).destination  # mapped once the device has left
    before = changes()

    apply_events(events=[disqualify(7, when=at(3))], now=NOW + dt.timedelta(seconds=1))
    result = apply_events(events=[qualify(7, when=at(2))], now=NOW + dt.timedelta(seconds=2))

    stored = membership(7)
    assert (stored.is_active, stored.datetime, stored.qualified_at) == (False, at(3), at(0))
    assert changes() == before
    assert result.destination_ids == set()
    assert not DestinationDevice.objects.filter(destination=destination).exists()


def test_a_disqualification_ends_the_membership_and_its_expiry():
    apply_events(events=[qualify(7, when=at(10))], now=NOW)

    apply_events(events=[disqualify(7, when=at(20), onboarded=True)], now=NOW)

    stored = membership(7)
    assert (stored.is_active, stored.datetime, stored.qualified_at, stored.expires_at) == (
        False, at(20), at(10), None
    )
    assert changes()[-1] == (UUID, 7, False, at(20), True)


# ---- opt-outs ----------------------------------------------------------------------------


def test_an_opt_out_leaves_every_active_segment_and_queues_zeros():
    destination = MappingFactory(segment=SegmentFactory(id=7)).destination
    apply_events(events=[qualify(7, when=at(1)), qualify(8, when=at(1)), qualify(9, when=at(1)),
                         disqualify(9, when=at(2))], now=NOW)
    DestinationDevice.objects.update(pending_since=None, left_segment_ids=[], last_sent_at=NOW)

    result = apply_opt_outs(events=[opt_out(when=at(10)), qualify(5, when=at(11))], now=NOW)

    assert sorted(Membership.objects.values_list("segment_id", "is_active", "datetime")) == [
        # 9 was left already: no change, but it keeps the opt-out's (later) datetime.
        (7, False, at(10)), (8, False, at(10)), (9, False, at(10))
    ]
    assert (result.events, result.changes) == (1, 2)
    assert result.destination_ids == {destination.id}
    assert (pair(destination).pending_since, pair(destination).left_segment_ids) == (NOW, [7])


def test_an_opt_out_obeys_the_latest_datetime_among_the_same_events():
    apply_events(events=[qualify(7, when=at(30)), opt_out(when=at(20)), qualify(8, when=at(10))], now=NOW)

    assert membership(7).is_active is True
    assert (membership(8).is_active, membership(8).datetime) == (False, at(20))


def test_an_opt_out_of_an_unknown_device_stores_nothing():
    result = apply_events(events=[opt_out(when=at(1))], now=NOW)

    assert (result.devices, result.changes) == (0, 0)
    assert not Device.objects.exists()
