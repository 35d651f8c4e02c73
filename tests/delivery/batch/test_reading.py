"""delivery.batch.reading and the cut-off: both readers agree, the cut-off waits for open ingestions."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from delivery.batch.reading import read_portable, read_postgresql
from delivery.batch.transfers import read_safe_cutoff
from delivery.models import MembershipChange
from tests.delivery.batch.batch_runs import DPID, GAMES, T0, later
from tests.delivery.concurrency import held_in_another_transaction
from tests.delivery.lifecycle_events import apply, disqualify, id_sync, qualify
from tests.delivery.pending_work import NEWS, SPORTS

pytestmark = pytest.mark.django_db


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
             "full_segments": [GAMES], "dpid": DPID, "now": T0}

    # When both read
    fast = list(read_postgresql(**query, chunk_size=2))
    portable = list(read_portable(**query, chunk_size=2))

    # Then they agree: changed devices by latest change (with their new segment's members), then the rest
    assert fast == portable
    assert [(device.aam_uuid, [(e.segment_id, e.is_active) for e in device.entries], device.partner_uuids)
            for device in fast] == [
        ("b", [(NEWS, True)], []),
        ("m", [(GAMES, True), (SPORTS, True)], []),
        ("a", [(NEWS, True), (SPORTS, False)], ["a-1"]),
        ("z", [(GAMES, True)], []),
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
