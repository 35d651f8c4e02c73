"""Claiming real-time work: when a request is due, how devices are packed, locks, order and leases."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest
from django.db import connection, transaction
from django.utils import timezone

from delivery.models import Delivery, DeliveryKind, DeliveryStatus, DestinationDevice
from delivery.realtime.claiming import claim_due_requests, find_due_destination_ids, next_due_at
from tests.delivery.pending_work import MOMENT, map_segments, pending_device, pending_devices
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db

SEGMENT = 14356


@pytest.fixture
def destination():
    """Overrides the partner destination: here pending devices wait up to 1 s for a request of 10 to fill."""
    destination = DestinationFactory(
        max_users_per_request=10, max_wait_ms=1000, timeout_ms=3000, retry_delay_ms=1000
    )
    map_segments(destination, SEGMENT)
    return destination


def document(delivery: Delivery) -> dict:
    return json.loads(bytes(delivery.body))


def uuids(delivery: Delivery) -> list[str]:
    return [user["AAM_UUID"] for user in document(delivery)["Users"]]


def still_pending(destination) -> int:
    return DestinationDevice.objects.filter(destination=destination, pending_since__isnull=False).count()


def test_25_devices_due_by_time_go_in_requests_of_10_10_and_5(destination, now):
    pending_devices(destination, 25, pending_since=now - dt.timedelta(seconds=2), segment_id=SEGMENT)

    deliveries = claim_due_requests(destination=destination, now=now, max_requests=10)

    assert [delivery.user_count for delivery in deliveries] == [10, 10, 5]
    assert [document(delivery)["User_count"] for delivery in deliveries] == ["10", "10", "5"]
    sent = sorted(aam_uuid for delivery in deliveries for aam_uuid in uuids(delivery))
    assert sent == [f"dev-{i:03d}" for i in range(25)]
    assert still_pending(destination) == 0


def test_9_pending_devices_that_have_not_waited_are_not_claimed(destination, now):
    pending_devices(destination, 9, pending_since=now - dt.timedelta(milliseconds=500), segment_id=SEGMENT)

    assert claim_due_requests(destination=destination, now=now, max_requests=10) == []
    assert still_pending(destination) == 9
    assert Delivery.objects.count() == 0


def test_the_9_go_together_once_the_oldest_has_waited_max_wait_ms(destination, now):
    pending_devices(destination, 9, pending_since=now - dt.timedelta(milliseconds=500), segment_id=SEGMENT)

    deliveries = claim_due_requests(
        destination=destination, now=now + dt.timedelta(milliseconds=500), max_requests=10
    )

    assert [delivery.user_count for delivery in deliveries] == [9]


def test_full_requests_go_at_once_and_an_incomplete_remainder_waits(destination, now):
    pending_devices(destination, 25, pending_since=now, segment_id=SEGMENT)

    deliveries = claim_due_requests(destination=destination, now=now, max_requests=10)

    assert [delivery.user_count for delivery in deliveries] == [10, 10]
    assert uuids(deliveries[0]) == [f"dev-{i:03d}" for i in range(10)]
    assert still_pending(destination) == 5


def test_a_claim_takes_at_most_max_requests_requests(destination, now):
    pending_devices(destination, 25, pending_since=now - dt.timedelta(seconds=2), segment_id=SEGMENT)

    deliveries = claim_due_requests(destination=destination, now=now, max_requests=2)

    assert [delivery.user_count for delivery in deliveries] == [10, 10]
    assert still_pending(destination) == 5


def test_a_paused_or_batch_only_destination_claims_nothing(destination, now):
    pending_devices(destination, 12, pending_since=now - dt.timedelta(seconds=2), segment_id=SEGMENT)

    destination.enabled = False
    assert claim_due_requests(destination=destination, now=now, max_requests=10) == []
    destination.enabled, destination.realtime = True, False
    assert claim_due_requests(destination=destination, now=now, max_requests=10) == []
    assert still_pending(destination) == 12


def test_a_claimed_delivery_is_pending_with_a_lease_and_holds_its_devices(destination, now):
    states = pending_devices(destination, 3, pending_since=now - dt.timedelta(seconds=2), segment_id=SEGMENT)

    [delivery] = claim_due_requests(destination=destination, now=now, max_requests=10)

    delivery.refresh_from_db()
    assert (delivery.kind, delivery.status) == (DeliveryKind.REALTIME, DeliveryStatus.PENDING)
    # timeout_ms + retry_delay_ms + 10 s
    assert delivery.lease_until == now + dt.timedelta(seconds=14)
    assert sorted(delivery.devices.values_list("aam_uuid", flat=True)) == ["dev-000", "dev-001", "dev-002"]
    for state in states:
        state.refresh_from_db()
        assert state.in_flight_delivery_id == delivery.pk
        assert (state.pending_since, state.left_segment_ids) == (None, [])


def test_a_device_in_flight_is_not_claimed_again_and_its_new_changes_wait(destination, now):
    [state] = pending_devices(destination, 1, pending_since=now - dt.timedelta(seconds=2), segment_id=SEGMENT)
    [first] = claim_due_requests(destination=destination, now=now, max_requests=10)
    DestinationDevice.objects.filter(pk=state.pk).update(pending_since=now)  # a new change arrives

    later = now + dt.timedelta(seconds=5)
    assert claim_due_requests(destination=destination, now=later, max_requests=10) == []

    DestinationDevice.objects.filter(pk=state.pk).update(in_flight_delivery=None)  # the first request ended
    [second] = claim_due_requests(destination=destination, now=later, max_requests=10)
    assert second.pk != first.pk
    assert uuids(second) == ["dev-000"]


def test_the_user_object_lists_active_segments_as_1_and_left_ones_as_0_each_once(destination, now):
    map_segments(destination, 12176, 555)
    left_at = MOMENT + dt.timedelta(seconds=3)
    pending_device(destination, "dev", pending_since=now - dt.timedelta(seconds=2), active=(SEGMENT, 555),
                   regions=(9, 6), partner_ids=("4250948725049857",))
    pending_device(destination, "dev", pending_since=now - dt.timedelta(seconds=2), left=(12176,),
                   moment=left_at)
    DestinationDevice.objects.filter(device_id="dev").update(left_segment_ids=[12176, 12176])

    [delivery] = claim_due_requests(destination=destination, now=now, max_requests=10)

    assert document(delivery)["Users"] == [{
        "AAM_UUID": "dev",
        "DataPartner_UUID": "4250948725049857",
        "AAM_Regions": ["6", "9"],
        "Segments": [
            {"Segment_ID": "555", "Status": "1", "DateTime": "Wed Jul 27 16:17:22 UTC 2016"},
            {"Segment_ID": "14356", "Status": "1", "DateTime": "Wed Jul 27 16:17:22 UTC 2016"},
            {"Segment_ID": "12176", "Status": "0", "DateTime": "Wed Jul 27 16:17:25 UTC 2016"},
        ],
    }]


def test_only_segments_mapped_and_active_today_are_listed_by_their_mapping_value(destination, now):
    today = now.astimezone(dt.UTC).date()
    map_segments(destination, 1, end_date=today - dt.timedelta(days=1))
    map_segments(destination, 2, start_date=today + dt.timedelta(days=1))
    map_segments(destination, 3, start_date=today, end_date=today)
    destination.mappings.filter(segment_id=3).update(value="open text")
    pending_device(
        destination, "dev", pending_since=now - dt.timedelta(seconds=2), active=(1, 2, 3, 4), left=(1,)
    )

    [delivery] = claim_due_requests(destination=destination, now=now, max_requests=10)

    assert [segment["Segment_ID"] for segment in document(delivery)["Users"][0]["Segments"]] == ["open text"]


def test_a_device_with_nothing_listed_is_skipped_and_no_longer_pending(destination, now):
    pending_device(destination, "unmapped", pending_since=now - dt.timedelta(seconds=3), active=(777,))
    pending_device(destination, "mapped", pending_since=now - dt.timedelta(seconds=2), active=(SEGMENT,))

    [delivery] = claim_due_requests(destination=destination, now=now, max_requests=10)

    assert uuids(delivery) == ["mapped"]
    skipped = DestinationDevice.objects.get(device_id="unmapped")
    assert (skipped.pending_since, skipped.in_flight_delivery_id) == (None, None)


def test_a_device_appears_once_per_partner_id_and_with_an_empty_one_when_it_has_none(destination, now):
    pending_device(destination, "two-ids", pending_since=now - dt.timedelta(seconds=2), active=(SEGMENT,),
                   partner_ids=("a", "b"))
    pending_device(destination, "no-id", pending_since=now - dt.timedelta(seconds=1), active=(SEGMENT,))
    other = DestinationFactory(user_dpid=destination.user_dpid + 1)
    pending_device(other, "no-id", pending_since=now, partner_ids=("elsewhere",))

    [delivery] = claim_due_requests(destination=destination, now=now, max_requests=10)

    users = [(user["AAM_UUID"], user["DataPartner_UUID"]) for user in document(delivery)["Users"]]
    assert users == [("two-ids", "a"), ("two-ids", "b"), ("no-id", "")]
    assert delivery.user_count == 3


def test_a_device_is_not_split_across_requests(destination, now):
    for name in ("first", "second"):
        pending_device(destination, name, pending_since=now - dt.timedelta(seconds=2), active=(SEGMENT,),
                       partner_ids=tuple(f"{name}-{i}" for i in range(6)))

    deliveries = claim_due_requests(destination=destination, now=now, max_requests=10)

    assert [set(uuids(delivery)) for delivery in deliveries] == [{"first"}, {"second"}]


def test_a_device_with_more_user_objects_than_the_limit_is_split(destination, now):
    pending_device(destination, "many", pending_since=now - dt.timedelta(seconds=2), active=(SEGMENT,),
                   partner_ids=tuple(f"id-{i:02d}" for i in range(23)))

    deliveries = claim_due_requests(destination=destination, now=now, max_requests=10)

    assert [delivery.user_count for delivery in deliveries] == [10, 10, 3]
    assert DestinationDevice.objects.get(device_id="many").in_flight_delivery_id == deliveries[-1].pk


@pytest.mark.postgresql_only
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_claims_never_take_the_same_device(destination):
    now = timezone.now()
    pending_devices(destination, 30, pending_since=now - dt.timedelta(seconds=2), segment_id=SEGMENT)
    first_holds_its_locks = threading.Event()
    second_done = threading.Event()
    claimed: dict = {}

    def first() -> None:
        with transaction.atomic():  # keeps the claim's row locks until the second claim is done
            claimed["first"] = sum((uuids(d) for d in claim_due_requests(
                destination=destination, now=now, max_requests=2)), [])
            first_holds_its_locks.set()
            second_done.wait(timeout=10)
        connection.close()

    def second() -> None:
        first_holds_its_locks.wait(timeout=10)
        started = time.monotonic()
        claimed["second"] = sum((uuids(d) for d in claim_due_requests(
            destination=destination, now=now, max_requests=10)), [])
        claimed["second_waited_s"] = time.monotonic() - started
        second_done.set()
        connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert len(claimed["first"]) == 20
    assert len(claimed["second"]) == 10
    assert set(claimed["first"]).isdisjoint(claimed["second"])
    assert claimed["second_waited_s"] < 2  # it skipped the locked rows instead of waiting for them
    assert Delivery.objects.count() == 3


def test_next_due_at_is_when_the_oldest_has_waited_or_now_when_a_request_is_full(destination, now):
    assert next_due_at(destination=destination, now=now) is None
    oldest = now - dt.timedelta(milliseconds=300)
    pending_devices(destination, 9, pending_since=oldest, segment_id=SEGMENT)

    assert next_due_at(destination=destination, now=now) == oldest + dt.timedelta(milliseconds=1000)

    pending_device(destination, "tenth", pending_since=now, active=(SEGMENT,))
    assert next_due_at(destination=destination, now=now) == now
    destination.enabled = False
    assert next_due_at(destination=destination, now=now) is None


def test_the_tick_finds_destinations_whose_oldest_device_has_waited_max_wait_ms(destination, now):
    waiting = DestinationFactory(max_wait_ms=1000)
    paused = DestinationFactory(max_wait_ms=0, enabled=False)
    pending_device(destination, "due", pending_since=now - dt.timedelta(milliseconds=1000), active=(SEGMENT,))
    pending_device(waiting, "not-yet", pending_since=now - dt.timedelta(milliseconds=999), active=(SEGMENT,))
    pending_device(paused, "paused", pending_since=now - dt.timedelta(days=1), active=(SEGMENT,))

    assert find_due_destination_ids(now=now) == {destination.pk}

    paused.enabled = True
    paused.save()
    assert find_due_destination_ids(now=now) == {destination.pk, paused.pk}


def test_the_tick_looks_past_devices_in_flight_and_reads_one_row_per_destination(
    destination, now, django_assert_num_queries
):
    # Given a long-waiting device held by a request in flight, and a claimable one not yet due
    pending_device(destination, "held", pending_since=now - dt.timedelta(days=1), active=(SEGMENT,))
    [in_flight] = claim_due_requests(destination=destination, now=now, max_requests=1)
    DestinationDevice.objects.filter(device_id="held").update(pending_since=now - dt.timedelta(days=1))
    pending_device(destination, "fresh", pending_since=now, active=(SEGMENT,))
    assert DestinationDevice.objects.get(device_id="held").in_flight_delivery_id == in_flight.pk

    # Then the destination is not due (the held device waits for its request), in one query
    with django_assert_num_queries(1):
        assert find_due_destination_ids(now=now) == set()
    assert find_due_destination_ids(now=now + dt.timedelta(milliseconds=1000)) == {destination.pk}
