"""Tasks and slots without a worker: the task functions are called in-process, Redis is real."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from django.utils import timezone

from aamdest.celery import QUEUES
from delivery import tasks
from delivery.coordination import scheduling_client, sending_guard_key, slots_key
from delivery.models import Delivery, DeliveryStatus
from delivery.realtime import flush
from delivery.realtime.slots import acquire_slot, holding_slot, release_slot, renew_slot, slot_expiry_ms
from tests.delivery.pending_work import map_segments, pending_devices
from tests.delivery.slots import slot_holders
from tests.factories import DestinationFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_redis")]

SEGMENT = 14356


def queued_messages() -> list[dict]:
    """The messages waiting in the three queues (realtime, batch, maintenance)."""
    client = scheduling_client()
    return [json.loads(raw) for queue in QUEUES for raw in client.lrange(queue, 0, -1)]


def queued_tasks() -> list[tuple[str, str]]:
    """(task name, args) of the messages waiting in the queues."""
    return sorted((m["headers"]["task"], m["headers"]["argsrepr"]) for m in queued_messages())


def seconds_ago(seconds: float) -> dt.datetime:
    return timezone.now() - dt.timedelta(seconds=seconds)


@pytest.fixture
def destination(partner):
    destination = DestinationFactory(url=partner.url, max_wait_ms=1000, retry_delay_ms=50)
    map_segments(destination, SEGMENT)
    return destination


def test_a_destination_has_as_many_slots_as_configured(settings):
    settings.AAMDEST_DESTINATION_CONCURRENCY = 2

    first = acquire_slot(destination_id=1, expiry_ms=10_000)
    second = acquire_slot(destination_id=1, expiry_ms=10_000)

    assert first and second and first != second
    assert acquire_slot(destination_id=1, expiry_ms=10_000) is None
    assert acquire_slot(destination_id=2, expiry_ms=10_000) is not None
    release_slot(destination_id=1, holder=first)
    assert acquire_slot(destination_id=1, expiry_ms=10_000) is not None


def test_a_dead_holders_slot_frees_itself_when_its_expiry_passes(settings):
    settings.AAMDEST_DESTINATION_CONCURRENCY = 1
    dead = acquire_slot(destination_id=1, expiry_ms=200)
    assert renew_slot(destination_id=1, holder=dead, expiry_ms=200)
    assert acquire_slot(destination_id=1, expiry_ms=200) is None

    time.sleep(0.25)

    assert slot_holders(destination_id=1) == 0
    assert acquire_slot(destination_id=1, expiry_ms=10_000) is not None
    assert not renew_slot(destination_id=1, holder=dead, expiry_ms=200)


def test_renewing_a_slot_that_was_lost_says_so(settings, empty_redis):
    settings.AAMDEST_DESTINATION_CONCURRENCY = 1
    with holding_slot(destination_id=1, expiry_ms=10_000) as renew:
        assert renew is not None and renew()

        empty_redis.delete(slots_key(1))  # the slot expired, and another flush may take it

        assert renew() is False
        assert acquire_slot(destination_id=1, expiry_ms=10_000) is not None


def test_a_flush_that_loses_its_slot_claims_nothing_more(destination, partner, monkeypatch, empty_redis):
    # Given a backlog of three requests, claimed one at a time
    monkeypatch.setattr(flush, "CLAIM_MAX_REQUESTS", 1)
    pending_devices(destination, 25, pending_since=seconds_ago(2), segment_id=SEGMENT)
    send_deliveries = flush.send_deliveries

    def send_then_lose_the_slot(**kwargs: object) -> None:
        send_deliveries(**kwargs)
        empty_redis.delete(slots_key(destination.pk))  # it expired meanwhile

    monkeypatch.setattr(flush, "send_deliveries", send_then_lose_the_slot)

    # When
    tasks.flush_destination(destination.pk)

    # Then the request it held went, and nothing more was claimed
    assert len(partner.requests) == 1
    assert list(Delivery.objects.values_list("status", flat=True)) == [DeliveryStatus.DELIVERED]


def test_schedule_flushes_queues_one_flush_per_destination_until_it_starts(destination):
    tasks.schedule_flushes({destination.pk, destination.pk + 1})
    tasks.schedule_flushes({destination.pk})

    assert queued_tasks() == [
        ("delivery.tasks.flush_destination", f"({destination.pk},)"),
        ("delivery.tasks.flush_destination", f"({destination.pk + 1},)"),
    ]

    tasks.flush_destination(destination.pk)  # the queued flush starts: a later wake-up queues another
    tasks.schedule_flushes({destination.pk})

    assert queued_tasks().count(("delivery.tasks.flush_destination", f"({destination.pk},)")) == 2


def test_a_flush_sends_every_due_request_and_frees_its_slot(destination, partner):
    pending_devices(destination, 25, pending_since=seconds_ago(2), segment_id=SEGMENT)

    tasks.flush_destination(destination.pk)

    assert sorted(json.loads(r.body)["User_count"] for r in partner.requests) == ["10", "10", "5"]
    assert set(Delivery.objects.values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}
    assert slot_holders(destination_id=destination.pk) == 0
    assert queued_tasks() == []  # no claim was full: no helper was called


def test_a_full_claim_calls_a_helper_flush_to_drain_in_parallel(destination, partner, monkeypatch):
    monkeypatch.setattr(flush, "CLAIM_MAX_REQUESTS", 2)
    pending_devices(destination, 25, pending_since=seconds_ago(2), segment_id=SEGMENT)

    tasks.flush_destination(destination.pk)

    assert len(partner.requests) == 3
    assert queued_tasks() == [("delivery.tasks.flush_destination", f"({destination.pk},)")]


def test_a_flush_without_a_free_slot_leaves_the_work_to_the_holders(destination, partner, settings):
    settings.AAMDEST_DESTINATION_CONCURRENCY = 1
    pending_devices(destination, 3, pending_since=seconds_ago(2), segment_id=SEGMENT)
    acquire_slot(destination_id=destination.pk, expiry_ms=10_000)

    tasks.flush_destination(destination.pk)

    assert partner.requests == []
    assert Delivery.objects.count() == 0


def test_a_flush_schedules_itself_when_the_oldest_pending_device_falls_due(destination, partner, empty_redis):
    pending_devices(destination, 9, pending_since=timezone.now(), segment_id=SEGMENT)

    tasks.flush_destination(destination.pk)
    tasks.flush_destination(destination.pk)  # a second look sets no second timer

    assert partner.requests == []
    assert queued_tasks() == [("delivery.tasks.flush_destination", f"({destination.pk},)")]
    [message] = queued_messages()
    eta = dt.datetime.fromisoformat(message["headers"]["eta"])
    assert timezone.now() < eta <= timezone.now() + dt.timedelta(milliseconds=1000)


def test_a_flush_of_a_gone_destination_returns_quietly():
    tasks.flush_destination(999_999)
    tasks.send_delivery_task(999_999)

    assert queued_tasks() == []


def test_the_tick_wakes_due_destinations_and_resends_deliveries_whose_lease_passed(destination):
    pending_devices(destination, 11, pending_since=seconds_ago(2), segment_id=SEGMENT)
    stale = Delivery.objects.create(
        destination=destination, kind="realtime", body=b"{}", user_count=0, lease_until=seconds_ago(1)
    )

    tasks.tick()
    tasks.tick()  # the flush is still queued and the lease was taken: nothing more

    assert queued_tasks() == [
        ("delivery.tasks.flush_destination", f"({destination.pk},)"),
        ("delivery.tasks.send_delivery_task", f"({stale.pk},)"),
    ]


def test_a_paused_destination_is_woken_by_the_tick_once_resumed(destination):
    destination.enabled = False
    destination.save()
    pending_devices(destination, 1, pending_since=seconds_ago(300), segment_id=SEGMENT)

    tasks.tick()
    assert queued_tasks() == []

    destination.enabled = True
    destination.save()
    tasks.tick()
    assert queued_tasks() == [("delivery.tasks.flush_destination", f"({destination.pk},)")]


def test_send_delivery_task_sends_and_wakes_the_destination(destination, partner):
    delivery = Delivery.objects.create(destination=destination, kind="redelivery", body=b"{}", user_count=0)

    tasks.send_delivery_task(delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert queued_tasks() == [("delivery.tasks.flush_destination", f"({destination.pk},)")]


def test_a_delivery_being_sent_by_another_task_is_left_to_it(destination, partner, empty_redis):
    delivery = Delivery.objects.create(destination=destination, kind="redelivery", body=b"{}", user_count=0)
    empty_redis.set(sending_guard_key(delivery.pk), 1, px=10_000)

    tasks.send_delivery_task(delivery.pk)

    assert partner.requests == []
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING


def test_the_slot_outlives_one_claim_sent_with_all_its_retries():
    destination = DestinationFactory.build(timeout_ms=3000, retry_delay_ms=1000, max_retries=1)

    assert slot_expiry_ms(destination) == (3000 + 1000) * 2 + 10_000
