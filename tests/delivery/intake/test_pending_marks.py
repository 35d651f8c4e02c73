"""delivery.intake.membership: which events mark a device pending for which real-time destinations."""

from __future__ import annotations

import datetime as dt

import pytest

from delivery.intake.membership import apply_events
from delivery.models import DestinationDevice
from tests.delivery.intake.membership_events import NOW, at, changes, disqualify, membership, pair, qualify
from tests.factories import DestinationFactory, MappingFactory, SegmentFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clock")]
T0 = NOW  # where the clock stands: factories date mappings then


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
