"""Every numeric setting at its largest accepted value still ingests, claims, sends, sweeps and batches.

Issue 10, finding 1: a `ttl_days` the API accepted once overflowed every expiry
date and blocked ingestion. Here each numeric field of a destination, a segment
and an event is set, through the API (so that its validation is what is
checked), to the largest value it accepts; the data then goes the whole way to
the local HTTPS partner (which answers 200, so no retry delay is slept), in real
time and in batches, through the tasks a worker runs, across a sweep.
"""

from __future__ import annotations

import datetime as dt

import pytest

from delivery.intake.events import MAX_ID
from delivery.lifecycle.sweeping import sweep
from delivery.sending.documents import format_aam_time
from delivery.tasks import flush_destination, send_due_batch
from destinations.models import LIMITS, MAX_TTL_DAYS, Destination
from tests.delivery.lifecycle_events import documents, statuses
from tests.local_partner import Partner

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
DEVICE = "d" * 100  # the longest AAM UUID a device row holds
LARGEST_BATCH_INTERVAL_HOURS = 24 * 366
LONGEST_WAIT = dt.timedelta(milliseconds=LIMITS["max_wait_ms"][1] + 1)
EXPIRED_AT = T0 + dt.timedelta(days=MAX_TTL_DAYS)


@pytest.fixture
def largest(operator_client, partner, clock) -> Destination:
    """A segment, a destination and their mapping, each numeric field at its largest, made through the API."""
    segment = {"id": MAX_ID, "name": "largest", "ttl_days": MAX_TTL_DAYS}
    assert operator_client.post("/api/v1/segments/", segment, format="json").status_code == 201
    response = operator_client.post("/api/v1/destinations/", {
        "name": "largest", "url": partner.url, "client_id": "74323", "user_dpid": MAX_ID,
        "aam_destination_id": MAX_ID, "batch_interval_hours": LARGEST_BATCH_INTERVAL_HOURS,
        **{name: high for name, (_, high) in LIMITS.items()},
    }, format="json")
    assert response.status_code == 201, response.json()
    mapping = {"destination": response.json()["id"], "segment_id": MAX_ID}
    response = operator_client.post("/api/v1/mappings/", mapping, format="json")
    assert response.status_code == 201, response.json()
    return Destination.objects.get(pk=mapping["destination"])


def ingest_at_largest(client) -> None:
    """An ID sync and a qualification with the largest DPID, segment ID and region ID, through the API."""
    events = [
        {"type": "id_sync", "aam_uuid": DEVICE, "dpid": MAX_ID, "dpuuid": "partner-1"},
        {"type": "qualification", "aam_uuid": DEVICE, "segment_id": MAX_ID, "regions": [MAX_ID, 1]},
    ]
    response = client.post("/api/v1/events/", events, format="json")
    assert response.status_code == 202, response.json()


def flush_and_batch(destination: Destination, partner: Partner) -> int:
    """Run the tasks a worker would: the real-time flush, then the due batch; return the requests sent."""
    before = len(partner.requests)
    flush_destination(destination.pk)
    send_due_batch(destination.pk)
    return len(partner.requests) - before


def test_every_numeric_setting_at_its_largest_sends_in_real_time_and_in_batches(
    operator_client, largest, partner, clock, eager_tasks
):
    # Given data with every number at its largest
    ingest_at_largest(operator_client)

    # When the real-time request is claimed and sent after the longest wait, and the first batch is cut
    clock.move_to(T0 + LONGEST_WAIT)
    sent = flush_and_batch(largest, partner)

    # Then each went out once, every number intact
    assert sent == 2
    for document in documents(partner):
        assert (document["User_DPID"], document["AAM_Destination_Id"]) == (str(MAX_ID), str(MAX_ID))
        assert statuses(document) == [(DEVICE, "partner-1", [(str(MAX_ID), "1", format_aam_time(T0))])]
        assert document["Users"][0]["AAM_Regions"] == ["1", str(MAX_ID)]


def test_the_longest_ttl_ends_at_the_sweep_and_its_zero_goes_out_in_real_time_and_in_the_next_batch(
    operator_client, largest, partner, clock, eager_tasks
):
    # Given data with every number at its largest, sent in real time and in the first batch
    ingest_at_largest(operator_client)
    clock.move_to(T0 + LONGEST_WAIT)
    flush_and_batch(largest, partner)

    # When the sweep runs once the longest TTL has ended, then real time and the next batch send
    swept_at = EXPIRED_AT + dt.timedelta(days=1)
    clock.move_to(swept_at)
    result = sweep(now=swept_at)
    clock.move_to(swept_at + LONGEST_WAIT)
    sent = flush_and_batch(largest, partner)

    # Then the membership ended at its expiry, and both modes sent its "0" once
    assert result.expired.memberships == 1
    assert sent == 2
    for document in documents(partner, 2):
        left = [(str(MAX_ID), "0", format_aam_time(EXPIRED_AT))]
        assert statuses(document) == [(DEVICE, "partner-1", left)]


def test_the_largest_request_holds_max_users_per_request_devices_in_both_modes(
    operator_client, largest, partner, clock, eager_tasks
):
    # Given one device more than the largest request holds, each with the longest AAM UUID
    most = LIMITS["max_users_per_request"][1]
    uuids = [f"{index:0100d}" for index in range(most + 1)]
    for chunk in (uuids[:most], uuids[most:]):
        events = [{"type": "qualification", "aam_uuid": uuid, "segment_id": MAX_ID} for uuid in chunk]
        assert operator_client.post("/api/v1/events/", events, format="json").status_code == 202

    # When the tasks run after the longest wait
    clock.move_to(T0 + LONGEST_WAIT)
    sent = flush_and_batch(largest, partner)

    # Then each mode sent a full request and one with the last device
    assert sent == 4
    assert sorted(len(document["Users"]) for document in documents(partner)) == [1, 1, most, most]
