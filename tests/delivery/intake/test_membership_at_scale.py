"""delivery.intake.membership at scale: a bounded number of queries, concurrent ingests without deadlocks."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection

from delivery.intake.events import Event
from delivery.intake.membership import apply_events
from delivery.models import Device
from tests.delivery.intake.membership_events import NOW, at, disqualify, id_sync, qualify
from tests.factories import DestinationFactory, MappingFactory, SegmentFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clock")]
T0 = NOW  # where the clock stands: factories date mappings then


# ---- scale and concurrency ------------------------------------------------------------


def make_events(count: int, *, devices: int, start: dt.datetime) -> list[Event]:
    """Mostly qualifications of 50 segments, a tenth disqualifications, a tenth ID syncs."""
    events = []
    for index in range(count):
        uuid = f"{index % devices:038d}"
        segment_id = 1000 + index * 7 % 50
        when = start + dt.timedelta(milliseconds=index)
        if index % 10 == 9:
            events.append(disqualify(segment_id, when=when, uuid=uuid))
        elif index % 10 == 8:
            events.append(id_sync(20914, f"gaid-{index}", when=when, uuid=uuid))
        else:
            events.append(qualify(segment_id, when=when, uuid=uuid, regions=[index % 12 + 1]))
    return events


@pytest.mark.postgresql_only  # SQLite's portable writes go in chunks: more queries, still not one per event
def test_ten_thousand_events_apply_in_a_few_queries_whatever_their_number(django_assert_max_num_queries):
    # Speed is measured by `make bench`; what a test can hold is that the work is set-based:
    # 10,000 events, half of them for known devices, cost about ten queries (no query per event).
    destinations = DestinationFactory.create_batch(2)
    for segment_id in range(1000, 1020):
        for destination in destinations:
            MappingFactory(segment=SegmentFactory(id=segment_id), destination=destination)
    apply_events(events=make_events(3_000, devices=3_000, start=at(0)), now=NOW)
    events = make_events(10_000, devices=6_000, start=at(10))

    with django_assert_max_num_queries(15):
        result = apply_events(events=events, now=NOW)

    assert result.events == 10_000
    assert Device.objects.count() == 6_000
    assert result.destination_ids == {destination.id for destination in destinations}


@pytest.mark.django_db(transaction=True)
def test_concurrent_ingests_of_the_same_devices_neither_deadlock_nor_lose_regions():
    errors: list[BaseException] = []

    def ingest(region: int, order: int) -> None:
        try:
            uuids = [f"{index:038d}" for index in range(300)][::order]
            events = [qualify(1 + index % 5, when=at(region), uuid=uuid, regions=[region])
                      for index, uuid in enumerate(uuids)]
            apply_events(events=events, now=NOW)
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=ingest, args=(region, 1 if region % 2 else -1))
               for region in (3, 6, 9, 11)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert set(map(tuple, Device.objects.values_list("regions", flat=True))) == {(3, 6, 9, 11)}
