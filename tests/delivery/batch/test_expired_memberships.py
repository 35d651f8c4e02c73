"""No batch carries a "1" for a membership whose TTL has ended, swept or not (CONTRACT §2.6, §4.3)."""

from __future__ import annotations

import datetime as dt

import pytest

from delivery.batch.reading import read_portable_users, read_postgresql
from delivery.batch.transfers import read_safe_cutoff
from delivery.lifecycle.expiry import expire_memberships
from delivery.models import MembershipChange
from tests.delivery.batch.batch_runs import DPID, T0, later, run_batch, users_of, when
from tests.delivery.lifecycle_events import apply, qualify
from tests.delivery.pending_work import NEWS, SPORTS

pytestmark = pytest.mark.django_db

BACKFILLED_AT = T0 - dt.timedelta(days=121)  # the default 120-day TTL ended yesterday
EXPIRED_AT = BACKFILLED_AT + dt.timedelta(days=120)


def test_an_expired_membership_is_not_in_the_first_batch_and_goes_out_once_as_zero_after_the_sweep(
    partner, batch_destination, clock
):
    # Given a device active in SPORTS and another whose SPORTS TTL ended, not yet swept
    apply(qualify("fresh", SPORTS, at=T0), qualify("expired", SPORTS, at=BACKFILLED_AT))

    # When the first batch is cut before the sweep, then the sweep runs and the next batch is cut
    run_batch(batch_destination)
    first = users_of(partner)
    expire_memberships(now=T0)
    clock.move_to(later(hours=24))
    run_batch(batch_destination)

    # Then the first batch carries the fresh device only, the next the expired one's "0", never a "1"
    assert first == [("fresh", "", [(str(SPORTS), "1", when(T0))])]
    assert users_of(partner, 1) == [("expired", "", [(str(SPORTS), "0", when(EXPIRED_AT))])]


def test_a_later_batch_sends_no_one_whose_ttl_ended_before_its_cut_and_its_zero_follows_the_sweep(
    partner, batch_destination, clock
):
    # Given a first batch already cut, then a backfilled qualification whose TTL has ended, not yet swept
    run_batch(batch_destination)
    apply(qualify("fresh", SPORTS, at=T0), qualify("expired", SPORTS, at=BACKFILLED_AT))

    # When the next batch is cut before the sweep, then the sweep runs and the batch after is cut
    clock.move_to(later(hours=24))
    run_batch(batch_destination)
    second = users_of(partner)
    expire_memberships(now=later(hours=24))
    clock.move_to(later(hours=48))
    run_batch(batch_destination)

    # Then the expired qualification never goes out as "1": only its "0", after the sweep
    assert second == [("fresh", "", [(str(SPORTS), "1", when(T0))])]
    assert users_of(partner, 1) == [("expired", "", [(str(SPORTS), "0", when(EXPIRED_AT))])]


@pytest.mark.parametrize("reader", [
    pytest.param(read_postgresql, marks=pytest.mark.postgresql_only), read_portable_users,
])
def test_both_readers_leave_out_a_latest_one_whose_ttl_ended_by_the_cut(reader, clock):
    # Given changes after a cut-off: a device with an expired and a live qualification, one with an expired
    after = MembershipChange.objects.order_by("id").values_list("id", flat=True).last() or 0
    apply(qualify("both", SPORTS, at=BACKFILLED_AT), qualify("both", NEWS, at=T0),
          qualify("gone", SPORTS, at=BACKFILLED_AT))

    # When the batch is read at T0
    devices = list(reader(after=after, until=read_safe_cutoff(), changed_segments=[SPORTS, NEWS],
                          full_segments=[], dpid=DPID, now=T0, values={SPORTS: "s", NEWS: "n"}, chunk_size=1))

    # Then only the live qualification is carried
    carried = [(device.aam_uuid, [(segment["Segment_ID"], segment["Status"]) for user in device.entries
                                  for segment in user["Segments"]]) for device in devices]
    assert carried == [("both", [("n", "1")])]
