"""Taking back a dead worker's delivery (issue 10, finding 9): within CONTRACT §2's 60 s, guard included."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from delivery import tasks
from delivery.coordination import sending_guard_key
from delivery.leases import lease_until
from delivery.models import Delivery, DeliveryStatus
from delivery.realtime import flush
from delivery.realtime.slots import slot_expiry_ms
from tests.factories import DestinationFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_redis")]

# CONTRACT §2: a delivery whose worker died is sent again within this.
TAKE_BACK_PROMISE = dt.timedelta(seconds=60)


@pytest.fixture
def slowest(partner):
    """A destination at the largest settings: the longest leases and guards there are."""
    return DestinationFactory(url=partner.url, timeout_ms=30_000, max_retries=5, retry_delay_ms=60_000)


def test_a_delivery_whose_sender_died_holding_its_guard_goes_out_again_within_60_s(
    slowest, partner, empty_redis, monkeypatch
):
    # Given a worker that leased a redelivery and took its sending guard, then died
    died_at = timezone.now() - TAKE_BACK_PROMISE + dt.timedelta(seconds=2)
    delivery = Delivery.objects.create(
        destination=slowest, kind="redelivery", body=b"{}", user_count=0,
        lease_until=lease_until(destination=slowest, now=died_at),
    )
    # The guard as that task set it, with its full expiry (550 s here) still to run.
    empty_redis.set(sending_guard_key(delivery.pk), "dead-task", px=slot_expiry_ms(slowest))
    assert slot_expiry_ms(slowest) > TAKE_BACK_PROMISE.total_seconds() * 1000
    queued: list[int] = []
    monkeypatch.setattr(tasks.send_delivery_task, "delay", queued.append)

    # When beat's tick runs, less than 60 s after the worker died, and a worker runs the task it queued
    tasks.tick()
    for delivery_id in queued:
        flush.send_one_delivery(delivery_id=delivery_id)

    # Then the delivery went out again
    assert queued == [delivery.pk]
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert len(partner.requests) == 1


def test_a_slow_task_ending_does_not_drop_the_guard_of_the_task_that_took_over(
    slowest, empty_redis, monkeypatch
):
    # Given a task whose delivery is taken back while it sends (the reaper drops its guard,
    # a new task takes one)
    delivery = Delivery.objects.create(destination=slowest, kind="redelivery", body=b"{}", user_count=0)
    guard = sending_guard_key(delivery.pk)

    def taken_over_while_sending(*, delivery_id: int) -> None:
        empty_redis.delete(guard)
        empty_redis.set(guard, "new-task", px=60_000)

    monkeypatch.setattr(flush, "send_delivery", taken_over_while_sending)

    # When the old task ends
    flush.send_one_delivery(delivery_id=delivery.pk)

    # Then the new task's guard still stands
    assert empty_redis.get(guard) == b"new-task"
