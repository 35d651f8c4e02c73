"""A membership whose TTL has ended never goes out as "1" in real time, swept or not (CONTRACT §2, §4.3)."""

from __future__ import annotations

import datetime as dt

import pytest

from delivery.lifecycle.expiry import expire_memberships
from delivery.sending.documents import format_aam_time
from tests.delivery.lifecycle_events import apply, documents, qualify, send_realtime, statuses
from tests.delivery.pending_work import NEWS, SPORTS

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 2, 2, 9, 0, tzinfo=dt.UTC)
UUID = "19393572368547369350319949416899715727"
# A backfilled qualification whose default 120-day TTL ended yesterday.
BACKFILLED_AT = T0 - dt.timedelta(days=121)
EXPIRED_AT = BACKFILLED_AT + dt.timedelta(days=120)


def test_an_expired_membership_is_not_listed_before_the_sweep_and_goes_out_once_as_zero_after(
    partner, destination, clock
):
    # Given a device qualified now in NEWS and, backfilled, in SPORTS whose TTL already ended
    apply(qualify(UUID, NEWS, at=T0), qualify(UUID, SPORTS, at=BACKFILLED_AT))

    # When its request goes out before the sweep, then the sweep runs and the next request goes
    send_realtime(destination)
    expire_memberships(now=T0)
    send_realtime(destination)

    # Then the first lists NEWS only (never SPORTS as "1"), the second SPORTS as "0" at its expiry
    first, second = documents(partner)
    assert statuses(first) == [(UUID, "", [(str(NEWS), "1", format_aam_time(T0))])]
    assert statuses(second) == [(UUID, "", [(str(NEWS), "1", format_aam_time(T0)),
                                            (str(SPORTS), "0", format_aam_time(EXPIRED_AT))])]


def test_a_backfilled_qualification_already_expired_never_sends_a_one(partner, destination, clock):
    # Given a device whose only qualification is backfilled and already expired
    apply(qualify(UUID, SPORTS, at=BACKFILLED_AT))

    # When its request is due before the sweep, then after it
    sent_before_sweep = send_realtime(destination)
    expire_memberships(now=T0)
    send_realtime(destination)

    # Then nothing goes out as "1": only the sweep's "0", once
    assert sent_before_sweep == 0
    [document] = documents(partner)
    assert statuses(document) == [(UUID, "", [(str(SPORTS), "0", format_aam_time(EXPIRED_AT))])]
