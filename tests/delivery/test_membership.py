"""delivery.intake.membership: events applied to devices, memberships, the change log and pending marks."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
import time_machine
from django.db import connection

from delivery.intake.events import Event, EventType
from delivery.intake.membership import apply_events, apply_opt_outs, compute_expires_at
from delivery.models import DestinationDevice, Device, Membership, MembershipChange, PartnerId
from destinations.models import Segment
from tests.factories import DestinationFactory, MappingFactory, SegmentFactory

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
UUID = "19393572368547369350319949416899715727"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def frozen_clock():
    # Factories default mapping dates to "today": make that NOW's date.
    with time_machine.travel(NOW, tick=False):
        yield


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


# ---- real-time pending marks ------------------------------------------------------------


def test_a_new_qualification_marks_the_device_pending_for_each_realtime_mapping():
    mapping = MappingFactory(segment=SegmentFactory(id=7))
    other = MappingFactory(segment=mapping.segment)
    MappingFactory(segment=SegmentFactory(id=8))  # another segment: not concerned

    result = apply_events(events=[qualify(7, when=at(1))], now=NOW)

    assert result.destination_ids == {mapping.destination_id, other.destination_id}
    assert DestinationDevice.objects.count() == 2
    state = pair(mapping.destination)
    assert (state.pending_since, state.left_segment_ids, state.last_sent_at) == (NOW, [], None)


def test_a_segment_entered_and_left_before_the_claim_stays_pending_with_the_left_segment():
    destination = MappingFactory(segment=SegmentFactory(id=7)).destination

    apply_events(events=[qualify(7, when=at(1))], now=NOW)
    result = apply_events(events=[disqualify(7, when=at(2))], now=NOW + dt.timedelta(milliseconds=300))

    assert result.destination_ids == {destination.id}
    state = pair(destination)
    assert (state.pending_since, state.left_segment_ids) == (NOW, [7])


def test_a_left_segment_is_listed_once_and_forgotten_when_entered_again():
    destination = MappingFactory(segment=SegmentFactory(id=7)).destination

    apply_events(events=[qualify(7, when=at(1)), disqualify(7, when=at(2)), qualify(7, when=at(3)),
                         disqualify(7, when=at(4))], now=NOW)
    assert pair(destination).left_segment_ids == [7]

    apply_events(events=[qualify(7, when=at(5))], now=NOW)
    assert pair(destination).left_segment_ids == []


def test_pending_since_keeps_its_first_value_and_the_in_flight_delivery_is_untouched():
    destination = MappingFactory(segment=SegmentFactory(id=7)).destination
    MappingFactory(segment=SegmentFactory(id=8), destination=destination)
    apply_events(events=[qualify(7, when=at(1))], now=NOW - dt.timedelta(seconds=5))
    DestinationDevice.objects.update(last_sent_at=NOW - dt.timedelta(days=1))

    apply_events(events=[qualify(8, when=at(2))], now=NOW)

    state = pair(destination)
    assert state.pending_since == NOW - dt.timedelta(seconds=5)
    assert state.last_sent_at == NOW - dt.timedelta(days=1)
    assert state.in_flight_delivery_id is None


@pytest.mark.parametrize(
    ("last_sent_days_ago", "is_sent"), [(None, True), (2.9, False), (3, True), (10, True)]
)
def test_a_requalification_sends_only_three_days_after_the_last_send(last_sent_days_ago, is_sent):
    destination = MappingFactory(segment=SegmentFactory(id=7)).destination
    apply_events(events=[qualify(7, when=at(1))], now=NOW)
    assert DestinationDevice.objects.filter(destination=destination).exists()
    last_sent_at = None if last_sent_days_ago is None else NOW - dt.timedelta(days=last_sent_days_ago)
    DestinationDevice.objects.update(pending_since=None, last_sent_at=last_sent_at)

    result = apply_events(events=[qualify(7, when=at(2))], now=NOW)

    assert (pair(destination).pending_since == NOW) is is_sent
    assert result.destination_ids == ({destination.id} if is_sent else set())
    assert membership(7).datetime == at(2)


def test_onboarded_events_never_mark_a_device_pending():
    destination = MappingFactory(segment=SegmentFactory(id=7)).destination

    result = apply_events(events=[qualify(7, when=at(1), onboarded=True)], now=NOW)
    apply_events(events=[disqualify(7, when=at(2), onboarded=True)], now=NOW)

    assert result.destination_ids == set()
    assert not DestinationDevice.objects.filter(destination=destination).exists()
    assert [change[4] for change in changes()] == [True, True]


def test_an_onboarded_entry_takes_a_waiting_zero_back():
    destination = MappingFactory(segment=SegmentFactory(id=7)).destination
    apply_events(events=[qualify(7, when=at(1)), disqualify(7, when=at(2))], now=NOW)

    apply_events(events=[qualify(7, when=at(3), onboarded=True)], now=NOW)

    assert pair(destination).left_segment_ids == []


@pytest.mark.parametrize(
    ("start", "end", "is_marked"),
    [(-1, None, True), (0, 0, True), (-5, -1, False), (1, None, False), (-3, 3, True)],
)
def test_only_mappings_active_today_mark_devices(start, end, is_marked):
    today = NOW.date()
    mapping = MappingFactory(
        segment=SegmentFactory(id=7), start_date=today + dt.timedelta(days=start),
        end_date=None if end is None else today + dt.timedelta(days=end),
    )

    result = apply_events(events=[qualify(7, when=at(1))], now=NOW)

    assert DestinationDevice.objects.filter(destination=mapping.destination).exists() is is_marked
    assert result.destination_ids == ({mapping.destination_id} if is_marked else set())


def test_a_destination_without_realtime_is_not_marked():
    MappingFactory(segment=SegmentFactory(id=7), destination=DestinationFactory(realtime=False))

    result = apply_events(events=[qualify(7, when=at(1))], now=NOW)

    assert result.destination_ids == set()
    assert not DestinationDevice.objects.exists()


def test_a_paused_destination_still_accumulates_pending_work():
    destination = DestinationFactory(enabled=False)
    MappingFactory(segment=SegmentFactory(id=7), destination=destination)

    apply_events(events=[qualify(7, when=at(1))], now=NOW)

    assert pair(destination).pending_since == NOW


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


# ---- scale and concurrency ------------------------------------------------------------


def make_events(count: int, *, devices: int, start: dt.datetime) -> list[Event]:
    """Mostly qualifications of 50 segments, a tenth disqualifications, a tenth ID syncs."""
    events = []
    for index in range(count):
        uuid = f"{index % devices:038d}"
        segment_id = 1000 + index * 7 % 50
        when = start + dt.timedelta(milliseconds=index)
        if index % 10 == 9:
            events.append(disqualify(segment_id, when=when, uuid=uuid))
        elif index % 10 == 8:
            events.append(id_sync(20914, f"gaid-{index}", when=when, uuid=uuid))
        else:
            events.append(qualify(segment_id, when=when, uuid=uuid, regions=[index % 12 + 1]))
    return events


def test_ten_thousand_events_apply_in_well_under_a_second():
    destinations = DestinationFactory.create_batch(2)
    for segment_id in range(1000, 1020):
        for destination in destinations:
            MappingFactory(segment=SegmentFactory(id=segment_id), destination=destination)
    # Half the devices are known already, in some of the segments.
    apply_events(events=make_events(3_000, devices=3_000, start=at(0)), now=NOW)
    events = make_events(10_000, devices=6_000, start=at(10))

    started = time.perf_counter()
    result = apply_events(events=events, now=NOW)
    elapsed = time.perf_counter() - started

    print(f"\napply_events: 10,000 events in {elapsed * 1000:.0f} ms on {connection.vendor}")
    assert result.events == 10_000
    assert Device.objects.count() == 6_000
    assert result.destination_ids == {destination.id for destination in destinations}


@pytest.mark.django_db(transaction=True)
def test_concurrent_ingests_of_the_same_devices_neither_deadlock_nor_lose_regions():
    errors: list[BaseException] = []

    def ingest(region: int, order: int) -> None:
        try:
            uuids = [f"{index:038d}" for index in range(300)][::order]
            events = [qualify(1 + index % 5, when=at(region), uuid=uuid, regions=[region])
                      for index, uuid in enumerate(uuids)]
            apply_events(events=events, now=NOW)
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=ingest, args=(region, 1 if region % 2 else -1))
               for region in (3, 6, 9, 11)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert set(map(tuple, Device.objects.values_list("regions", flat=True))) == {(3, 6, 9, 11)}
