"""delivery.lifecycle.expiry: TTL expiry (the one-day rule included), segment TTL changes, inactivity."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import time_machine
from django.db import connection, transaction

from delivery.lifecycle.expiry import apply_segment_ttl, expire_memberships, leave_inactive_devices
from delivery.models import DestinationDevice, Device, DeviceErasure, Membership, MembershipChange
from delivery.sending.documents import format_aam_time
from destinations.models import Segment
from tests.delivery.lifecycle_events import apply, documents, qualify, send_realtime, statuses
from tests.delivery.pending_work import map_segments
from tests.factories import DestinationFactory, SegmentFactory

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 1, 10, 15, 30, tzinfo=dt.UTC)
UUID = "19393572368547369350319949416899715727"
SPORTS, NEWS = 14356, 12176


@pytest.fixture
def clock():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
def destination(partner, clock):
    destination = DestinationFactory(url=partner.url, max_wait_ms=0)
    map_segments(destination, SPORTS, NEWS)
    return destination


def set_ttl(segment_id: int, ttl_days: int) -> None:
    SegmentFactory(id=segment_id)
    Segment.objects.filter(pk=segment_id).update(ttl_days=ttl_days)


def membership(segment_id: int, uuid: str = UUID) -> Membership:
    return Membership.objects.get(device_id=uuid, segment_id=segment_id)


def exits() -> list[tuple[str, int, bool, dt.datetime]]:
    return list(MembershipChange.objects.filter(is_active=False)
                .values_list("aam_uuid", "segment_id", "is_active", "datetime"))


# ---- TTL ---------------------------------------------------------------------------------


def test_an_expired_membership_sends_a_zero_dated_at_its_expiry(partner, destination, clock):
    # Given a device in two segments, sent to the partner
    set_ttl(NEWS, 30)
    apply(qualify(UUID, SPORTS, at=T0), qualify(UUID, NEWS, at=T0))
    send_realtime(destination)

    # When the sweep runs an hour after NEWS's 30 days
    expiry = T0 + dt.timedelta(days=30)
    clock.move_to(expiry + dt.timedelta(hours=1))
    result = expire_memberships(now=expiry + dt.timedelta(hours=1))
    send_realtime(destination)

    # Then NEWS ended at its expiry time, was logged, and the partner got it as "0" beside the active one
    assert (result.memberships, result.destination_ids) == (1, {destination.pk})
    left = membership(NEWS)
    assert (left.is_active, left.datetime, left.expires_at) == (False, expiry, None)
    assert exits() == [(UUID, NEWS, False, expiry)]
    first, second = documents(partner)
    assert statuses(second) == [
        (UUID, "", [(str(SPORTS), "1", format_aam_time(T0)), (str(NEWS), "0", format_aam_time(expiry))])
    ]


def test_a_membership_is_kept_until_its_expiry_and_a_new_qualification_extends_it(clock):
    # Given a qualification, then another 100 days later
    apply(qualify(UUID, SPORTS, at=T0))
    clock.move_to(T0 + dt.timedelta(days=100))
    apply(qualify(UUID, SPORTS, at=T0 + dt.timedelta(days=100)))

    # When the sweep runs 120 days after the first
    first_expiry = T0 + dt.timedelta(days=120)
    expired_early = expire_memberships(now=first_expiry)

    # Then the membership lasts 120 days from the second
    assert expired_early.memberships == 0
    assert membership(SPORTS).expires_at == T0 + dt.timedelta(days=220)
    assert expire_memberships(now=T0 + dt.timedelta(days=220) - dt.timedelta(microseconds=1)).memberships == 0
    assert expire_memberships(now=T0 + dt.timedelta(days=220)).memberships == 1


def test_a_one_day_ttl_ends_at_midnight_utc_two_days_after_the_qualification_date(clock):
    # Given a one-day segment qualified at 23:59 UTC on the 10th
    set_ttl(SPORTS, 1)
    late = dt.datetime(2026, 1, 10, 23, 59, tzinfo=dt.UTC)
    clock.move_to(late)
    apply(qualify(UUID, SPORTS, at=late))
    midnight = dt.datetime(2026, 1, 12, tzinfo=dt.UTC)

    # When the sweep runs a second before and at 00:00 UTC on the 12th
    before = expire_memberships(now=midnight - dt.timedelta(seconds=1))
    at_midnight = expire_memberships(now=midnight)

    # Then it ends at midnight (24 + (24 - 23:59) hours later), dated so
    assert (before.memberships, at_midnight.memberships) == (0, 1)
    assert membership(SPORTS).datetime == midnight


def test_running_the_sweep_twice_sends_nothing_twice(partner, destination, clock):
    # Given an expired membership whose "0" went out
    apply(qualify(UUID, SPORTS, at=T0))
    send_realtime(destination)
    later = T0 + dt.timedelta(days=121)
    clock.move_to(later)
    expire_memberships(now=later)
    send_realtime(destination)

    # When the sweep runs again
    again = expire_memberships(now=later)
    sent = send_realtime(destination)

    # Then nothing more is logged or sent
    assert (again.memberships, sent) == (0, 0)
    assert len(exits()) == 1
    assert len(partner.requests) == 2


def test_the_sweep_works_in_chunks_until_every_expired_membership_is_ended(clock):
    # Given 12 devices whose memberships expired
    apply(*[qualify(f"device-{n:02d}", SPORTS, at=T0) for n in range(12)])

    # When the sweep runs with chunks of 5
    result = expire_memberships(now=T0 + dt.timedelta(days=130), chunk_size=5)

    # Then all are ended, each logged once
    assert result.memberships == 12
    assert not Membership.objects.filter(is_active=True).exists()
    assert MembershipChange.objects.filter(is_active=False).count() == 12


@pytest.mark.postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_sweep_skips_the_memberships_another_sweep_holds(clock):
    # Given two expired memberships, one of them locked by another transaction (another sweep)
    apply(qualify("held", SPORTS, at=T0), qualify("free", SPORTS, at=T0))
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with transaction.atomic():
            list(Membership.objects.select_for_update().filter(device_id="held"))
            locked.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    locked.wait(10)

    # When this sweep runs
    try:
        result = expire_memberships(now=T0 + dt.timedelta(days=130))
    finally:
        release.set()
        holder.join()

    # Then it ended only the free one, without waiting
    assert result.memberships == 1
    assert list(Membership.objects.filter(is_active=True).values_list("device_id", flat=True)) == ["held"]


@pytest.mark.postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_sweep_skips_a_device_an_ingestion_holds_and_expires_it_next_run(clock):
    # Given two expired memberships, one device locked by another transaction (an ingestion)
    destination = DestinationFactory(max_wait_ms=0)
    map_segments(destination, SPORTS)
    apply(qualify("held", SPORTS, at=T0), qualify("free", SPORTS, at=T0))
    DestinationDevice.objects.update(pending_since=None, left_segment_ids=[])
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with transaction.atomic():
            list(Device.objects.select_for_update().filter(aam_uuid="held"))
            locked.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    locked.wait(10)

    # When this sweep runs, then again once the ingestion committed
    later = T0 + dt.timedelta(days=130)
    try:
        first = expire_memberships(now=later)
    finally:
        release.set()
        holder.join()
    held_after_first = membership(SPORTS, "held").is_active
    second = expire_memberships(now=later)

    # Then the first ended only the free one, without waiting; the second the held one, with its "0"
    assert (first.memberships, held_after_first, second.memberships) == (1, True, 1)
    assert not Membership.objects.filter(is_active=True).exists()
    assert sorted(DestinationDevice.objects.values_list("device_id", "left_segment_ids")) == [
        ("free", [SPORTS]), ("held", [SPORTS])
    ]


# ---- a segment's TTL changes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("ttl_days", "expected"),
    [
        (10, T0 + dt.timedelta(days=10)),
        (1, dt.datetime(2026, 1, 12, tzinfo=dt.UTC)),
        (0, None),
    ],
)
def test_a_new_ttl_applies_to_the_segments_existing_memberships(clock, ttl_days, expected):
    # Given active members of SPORTS, a left one, and a member of another segment
    apply(qualify(UUID, SPORTS, at=T0), qualify("other", SPORTS, at=T0), qualify(UUID, NEWS, at=T0))
    Membership.objects.filter(device_id="other").update(is_active=False, expires_at=None)

    # When its TTL changes
    Segment.objects.filter(pk=SPORTS).update(ttl_days=ttl_days)
    updated = apply_segment_ttl(segment=Segment.objects.get(pk=SPORTS), chunk_size=1)

    # Then the active membership's expiry follows; the others do not move
    assert updated == 1
    assert membership(SPORTS).expires_at == expected
    assert membership(SPORTS, "other").expires_at is None
    assert membership(NEWS).expires_at == T0 + dt.timedelta(days=120)


def test_a_shorter_ttl_ends_memberships_at_the_next_sweep_dated_at_the_new_expiry(clock):
    # Given a membership 20 days old
    apply(qualify(UUID, SPORTS, at=T0))
    now = T0 + dt.timedelta(days=20)
    clock.move_to(now)

    # When its segment's TTL becomes 7 days and the sweep runs
    Segment.objects.filter(pk=SPORTS).update(ttl_days=7)
    apply_segment_ttl(segment=Segment.objects.get(pk=SPORTS))
    result = expire_memberships(now=now)

    # Then it ended 7 days after its qualification
    assert result.memberships == 1
    assert membership(SPORTS).datetime == T0 + dt.timedelta(days=7)


# ---- inactivity --------------------------------------------------------------------------


def test_a_device_not_seen_for_120_days_leaves_every_segment_whatever_its_ttl(partner, destination, clock):
    # Given a device in a never-expiring segment and a 365-day one, last seen at T0
    set_ttl(SPORTS, 0)
    set_ttl(NEWS, 365)
    apply(qualify(UUID, SPORTS, at=T0), qualify(UUID, NEWS, at=T0))
    send_realtime(destination)
    inactive_since = T0 + dt.timedelta(days=120)

    # When the sweep runs a second before, then at, 120 days after
    clock.move_to(inactive_since)
    early = leave_inactive_devices(now=inactive_since - dt.timedelta(seconds=1))
    result = leave_inactive_devices(now=inactive_since)
    send_realtime(destination)

    # Then both segments ended at that moment, the partner got "0"s, and the device is to be forgotten
    assert early.devices == 0
    assert (result.devices, result.memberships, result.destination_ids) == (1, 2, {destination.pk})
    assert not Membership.objects.filter(is_active=True).exists()
    when = format_aam_time(inactive_since)
    [(_, _, segments)] = statuses(documents(partner)[-1])
    assert segments == [(str(NEWS), "0", when), (str(SPORTS), "0", when)]
    assert list(DeviceErasure.objects.values_list("aam_uuid", "reason")) == [(UUID, "inactivity")]


def test_the_inactivity_sweep_takes_each_device_once(clock):
    # Given a device inactive for 200 days
    apply(qualify(UUID, SPORTS, at=T0))
    now = T0 + dt.timedelta(days=200)

    # When the sweep runs twice
    first = leave_inactive_devices(now=now)
    second = leave_inactive_devices(now=now)

    # Then the second finds nothing to do
    assert (first.devices, second.devices) == (1, 0)
    assert MembershipChange.objects.filter(is_active=False).count() == 1
    assert DestinationDevice.objects.count() == 0  # no destination maps the segment
    assert Device.objects.filter(pk=UUID).exists()  # forgotten later, by the erasure


# ---- the interfaces that change a TTL ------------------------------------------------------


def test_changing_a_segments_ttl_through_the_api_moves_its_members_expiry(operator_client, clock):
    # Given a member of SPORTS
    apply(qualify(UUID, SPORTS, at=T0))

    # When its TTL becomes 7 days through the API
    response = operator_client.patch(f"/api/v1/segments/{SPORTS}/", {"ttl_days": 7}, format="json")

    # Then the profile shows the new expiry
    assert response.status_code == 200
    profile = operator_client.get(f"/api/v1/profiles/{UUID}/").json()
    assert [segment["expires_at"] for segment in profile["segments"]] == ["2026-01-17T15:30:00Z"]


def test_changing_a_segments_ttl_in_the_admin_moves_its_members_expiry(admin_client, clock,
                                                                        django_capture_on_commit_callbacks):
    # Given a member of SPORTS
    apply(qualify(UUID, SPORTS, at=T0))

    # When its TTL becomes never-expiring in the admin
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/destinations/segment/{SPORTS}/change/",
                                     {"name": "sports", "ttl_days": 0})

    # Then the membership no longer expires
    assert response.status_code == 302
    assert membership(SPORTS).expires_at is None
