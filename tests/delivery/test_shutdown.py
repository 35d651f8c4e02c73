"""Warm shutdown inside one worker thread (CONTRACT §6): claim nothing more, hand back what waits."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from django.utils import timezone

from delivery import shutdown
from delivery.coordination import scheduling_client, sending_guard_key
from delivery.leases import lease_until, reap_expired_deliveries
from delivery.models import Delivery, DeliveryStatus
from delivery.realtime import flush
from delivery.sending import handing_back, rounds
from delivery.sending.attempts import Sending
from tests.delivery.pending_work import SPORTS, pending_devices
from tests.delivery.sending.claims import attempts_of, claim
from tests.local_partner import Reply

pytestmark = pytest.mark.django_db


@pytest.fixture
def stopping() -> Iterator[None]:
    """This process is shutting down, as after the worker's SIGTERM."""
    shutdown.request_stop()
    yield
    shutdown.reset()


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    """The deliveries queued for another worker (`handing_back.queue_sends`), instead of queueing."""
    sends: list[int] = []
    monkeypatch.setattr(handing_back, "queue_sends", sends.extend)
    monkeypatch.setattr(flush, "queue_sends", sends.extend)
    return sends


def test_a_delivery_that_would_wait_for_its_retry_is_handed_back_at_once(partner, destination, queued):
    # Given a delivery whose first attempt fails, with a 30 s retry delay
    destination.retry_delay_ms = 30_000
    destination.save()
    partner.script = [Reply(status=500), Reply()]
    [delivery] = claim(destination)

    # When the worker is asked to stop while it sends
    def stop_during_the_attempt(received):
        shutdown.request_stop()
        return Reply(status=500)

    partner.responder = stop_during_the_attempt
    try:
        started = timezone.now()
        rounds.send_deliveries(destination=destination, deliveries=[delivery])
    finally:
        shutdown.reset()

    # Then the attempt in flight was recorded, and the delivery handed back at once: its lease
    # lapsed, a send task queued for another worker, and the reaper would take it too
    assert timezone.now() - started < dt.timedelta(seconds=5)
    assert attempts_of(delivery) == [(1, 500, "status")]
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.lease_until <= timezone.now()
    assert queued == [delivery.pk]
    assert reap_expired_deliveries(now=timezone.now()) == [delivery.pk]


def test_a_delivery_taken_over_meanwhile_is_not_handed_back(partner, destination, queued, monkeypatch):
    # Given a delivery whose first attempt failed, taken over by the reaper as its worker stops
    partner.script = [Reply(status=500)]
    [delivery] = claim(destination)
    taken = lease_until(destination=destination, now=timezone.now() + dt.timedelta(minutes=1))

    def taken_over_as_the_stop_comes(seconds: float) -> bool:
        Delivery.objects.filter(pk=delivery.pk).update(lease_until=taken)
        return True

    monkeypatch.setattr(rounds, "wait_unless_stopping", taken_over_as_the_stop_comes)

    # When this worker hands back what it holds
    rounds.send_deliveries(destination=destination, deliveries=[delivery])

    # Then the new owner's lease stands
    delivery.refresh_from_db()
    assert delivery.lease_until == taken
    assert queued == []


def test_a_stopping_flush_claims_nothing_and_queues_a_flush_for_another_worker(
    partner, destination, stopping, monkeypatch
):
    pending_devices(destination, 2, pending_since=timezone.now() - dt.timedelta(seconds=1), segment_id=SPORTS)
    woken: list[set[int]] = []
    monkeypatch.setattr(flush, "schedule_flushes", woken.append)

    flush.run_flush(destination_id=destination.pk)

    assert partner.requests == []
    assert not Delivery.objects.exists()
    assert woken == [{destination.pk}]


def test_a_stopping_flush_ends_after_the_claim_it_sent(partner, destination, monkeypatch):
    pending_devices(destination, 3, pending_since=timezone.now() - dt.timedelta(seconds=1), segment_id=SPORTS)

    def stop_after_the_first_claim() -> bool:
        shutdown.request_stop()
        return True

    try:
        sent = flush.send_due_requests(
            destination=destination, max_requests=1, keep_slot=stop_after_the_first_claim
        )
    finally:
        shutdown.reset()

    assert sent == 1
    assert len(partner.requests) == 1
    assert Delivery.objects.count() == 1


def test_a_stopping_worker_queues_a_delivery_task_again_instead_of_sending(
    partner, destination, queued, stopping
):
    delivery = Delivery.objects.create(
        destination=destination, kind="redelivery", body=b"{}", user_count=0,
        lease_until=lease_until(destination=destination, now=timezone.now()),
    )

    flush.send_one_delivery(delivery_id=delivery.pk)

    assert partner.requests == []
    assert queued == [delivery.pk]


@pytest.mark.usefixtures("empty_redis")
def test_handing_back_drops_the_sending_guard_so_the_queued_task_sends_at_once(destination, queued):
    # Given a delivery this worker's task sends, holding its sending guard
    owned = Delivery.objects.create(
        destination=destination, kind="redelivery", body=b"{}", user_count=0,
        lease_until=lease_until(destination=destination, now=timezone.now()),
    )
    scheduling_client().set(sending_guard_key(owned.pk), "this-task")

    # When it is handed back
    sending = Sending(delivery=owned, attempt_number=2, lease=owned.lease_until)
    handed = handing_back.hand_back(sendings=[sending])

    # Then the task queued for another worker will not find the guard held
    assert handed == queued == [owned.pk]
    assert scheduling_client().get(sending_guard_key(owned.pk)) is None
