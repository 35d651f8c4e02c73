"""delivery.lifecycle.expiry: TTL expiry (the one-day rule included), sweeps in chunks beside writers."""

from __future__ import annotations

import datetime as dt

import pytest

from delivery.lifecycle.expiry import expire_memberships
from delivery.models import DestinationDevice, Device, Membership, MembershipChange
from delivery.sending.documents import format_aam_time
from tests.delivery.concurrency import held_in_another_transaction
from tests.delivery.lifecycle.memberships import T0, UUID, exits, membership, set_ttl
from tests.delivery.lifecycle_events import apply, documents, qualify, send_realtime, statuses
from tests.delivery.pending_work import NEWS, SPORTS, map_segments
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db


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
    def another_sweep() -> None:
        list(Membership.objects.select_for_update().filter(device_id="held"))

    # When this sweep runs
    with held_in_another_transaction(another_sweep):
        result = expire_memberships(now=T0 + dt.timedelta(days=130))

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
    def an_ingestion() -> None:
        list(Device.objects.select_for_update().filter(aam_uuid="held"))

    # When this sweep runs, then again once the ingestion committed
    later = T0 + dt.timedelta(days=130)
    with held_in_another_transaction(an_ingestion):
        first = expire_memberships(now=later)
    held_after_first = membership(SPORTS, "held").is_active
    second = expire_memberships(now=later)

    # Then the first ended only the free one, without waiting; the second the held one, with its "0"
    assert (first.memberships, held_after_first, second.memberships) == (1, True, 1)
    assert not Membership.objects.filter(is_active=True).exists()
    assert sorted(DestinationDevice.objects.values_list("device_id", "left_segment_ids")) == [
        ("free", [SPORTS]), ("held", [SPORTS])
    ]
