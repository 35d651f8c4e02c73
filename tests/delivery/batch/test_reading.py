"""delivery.batch.reading and the cut-off: both readers agree, the cut-off waits for open ingestions."""

from __future__ import annotations

import datetime as dt
import random
import threading

import pytest
from django.db import connection

from delivery.batch.reading import AAM_TIME_SQL, read_portable_users, read_postgresql
from delivery.batch.transfers import read_safe_cutoff
from delivery.models import MembershipChange
from delivery.sending.documents import format_aam_time
from tests.delivery.batch.batch_runs import DPID, GAMES, T0, later
from tests.delivery.concurrency import held_in_another_transaction
from tests.delivery.lifecycle_events import apply, disqualify, id_sync, qualify
from tests.delivery.pending_work import NEWS, SPORTS

pytestmark = pytest.mark.django_db
TOKYO = dt.timezone(dt.timedelta(hours=9))


# ---- reading -------------------------------------------------------------------------------


@pytest.mark.postgresql_only
def test_both_readers_yield_the_same_devices(batch_destination, clock):
    # Given changes after a cut-off, in covered segments, and members of a newly mapped one
    apply(id_sync("a", DPID, "a-1", at=T0), qualify("a", SPORTS, at=T0), qualify("z", GAMES, at=T0),
          qualify("m", GAMES, at=T0))
    after = MembershipChange.objects.order_by("id").last().id
    apply(qualify("b", NEWS, at=later(seconds=1)), qualify("m", SPORTS, at=later(seconds=2)),
          qualify("a", NEWS, at=later(seconds=3)), disqualify("a", SPORTS, at=later(seconds=3)))
    query = {"after": after, "until": read_safe_cutoff(), "changed_segments": [SPORTS, NEWS],
             "full_segments": [GAMES], "dpid": DPID, "now": T0,
             "values": {SPORTS: "sports", NEWS: "news", GAMES: "games"}}

    # When both read
    fast = list(read_postgresql(**query, chunk_size=2))
    portable = list(read_portable_users(**query, chunk_size=2))

    # Then they agree: changed devices by latest change (with their new segment's members), then the rest;
    # a device's "1"s come before its "0"s, each by segment ID
    assert fast == portable
    assert [(device.aam_uuid, [(user["DataPartner_UUID"], [(segment["Segment_ID"], segment["Status"])
                                                            for segment in user["Segments"]])
                               for user in device.entries])
            for device in fast] == [
        ("b", [("", [("news", "1")])]),
        ("m", [("", [("games", "1"), ("sports", "1")])]),
        ("a", [("a-1", [("news", "1"), ("sports", "0")])]),
        ("z", [("", [("games", "1")])]),
    ]


@pytest.mark.django_db(transaction=True)
def test_the_cutoff_waits_for_ingestions_still_writing_changes(clock):
    # Given an ingestion whose change is written but not committed
    apply(qualify("a", SPORTS, at=T0))
    cutoffs: list[int] = []
    reader = threading.Thread(target=lambda: (cutoffs.append(read_safe_cutoff()), connection.close()))

    # When the cut-off is read meanwhile (the ingestion commits at the end of the block)
    with held_in_another_transaction(lambda: apply(qualify("b", SPORTS, at=T0))):
        reader.start()
        reader.join(0.5)
        waited = reader.is_alive()
    reader.join(10)

    # Then it waited for the commit and includes that change
    assert waited
    assert cutoffs == [MembershipChange.objects.order_by("id").last().id]


@pytest.mark.postgresql_only
def test_postgresql_formats_times_exactly_as_format_aam_time():
    # Given edge moments (every weekday and month, years of 1 to 4 digits, leap days, the last microsecond,
    # other offsets) and a few thousand random ones
    rng = random.Random(13)
    years = (1, 9, 99, 999, 1970, 2000, 2024, 9999)
    moments = [dt.datetime(year, month, day, 23, 59, 59, 999_999, tzinfo=dt.UTC)
               for year in years for month in range(1, 13) for day in (1, 28)]
    moments += [dt.datetime(2024, 2, 29, tzinfo=dt.UTC), dt.datetime(2026, 3, 1, 1, 0, tzinfo=TOKYO)]
    moments += [dt.datetime(1, 1, 2, tzinfo=dt.UTC) + dt.timedelta(seconds=rng.uniform(0, 3e11))
                for _ in range(3_000)]

    # When PostgreSQL formats them
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {AAM_TIME_SQL.format('t')} FROM unnest(%s::timestamptz[]) WITH ORDINALITY AS "
                       "m(t, n) ORDER BY n", [moments])
        formatted = [text for (text,) in cursor.fetchall()]

    # Then every one reads as the Python formatter writes it
    assert formatted == [format_aam_time(moment) for moment in moments]
