"""A first batch carries no membership whose TTL has ended, swept or not (CONTRACT §2.6, §4.3)."""

from __future__ import annotations

import datetime as dt

import pytest

from delivery.lifecycle.expiry import expire_memberships
from tests.delivery.batch.batch_runs import T0, later, run_batch, users_of, when
from tests.delivery.lifecycle_events import apply, qualify
from tests.delivery.pending_work import SPORTS

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
