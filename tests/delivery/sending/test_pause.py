"""Pause means nothing is sent (issue 10, finding 5): redeliveries, taken-back deliveries and retries wait."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from delivery import services, tasks
from delivery.leases import lease_until
from delivery.models import Delivery, DeliveryStatus
from delivery.realtime.flush import send_one_delivery
from delivery.sending import rounds
from destinations.models import ChangeSource, Destination
from destinations.services import pause_destination, resume_destination
from tests.delivery.sending.claims import waiting_with
from tests.factories import DestinationFactory
from tests.local_partner import Reply

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_redis")]


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    """The deliveries whose sending task was queued (run them with `run_queued`)."""
    ids: list[int] = []
    monkeypatch.setattr(tasks.send_delivery_task, "delay", ids.append)
    return ids


def run_queued(queued: list[int]) -> None:
    """What the workers do with the queued send tasks."""
    while queued:
        send_one_delivery(delivery_id=queued.pop(0))


@pytest.fixture
def destination(partner) -> Destination:
    return DestinationFactory(url=partner.url, retry_delay_ms=50, max_retries=1)


def set_enabled(destination: Destination, enabled: bool) -> None:
    change = resume_destination if enabled else pause_destination
    change(destination_id=destination.pk, actor=None, source=ChangeSource.API)


def test_a_redelivery_of_a_paused_destination_waits_for_the_resume(
    destination, partner, queued, django_capture_on_commit_callbacks
):
    # Given a failed delivery of a paused destination
    failed = Delivery.objects.create(
        destination=destination, kind="realtime", body=b"{}", user_count=0, status=DeliveryStatus.FAILED
    )
    set_enabled(destination, False)

    # When the operator redelivers it, and workers and beat run
    with django_capture_on_commit_callbacks(execute=True):
        redelivery = services.redeliver(delivery=failed)
    run_queued(queued)
    tasks.tick()

    # Then it waits, pending and unleased (the reaper leaves it alone), with nothing sent
    redelivery.refresh_from_db()
    assert (redelivery.status, redelivery.lease_until) == (DeliveryStatus.PENDING, None)
    assert partner.requests == []
    assert queued == []

    # And it goes out at the tick after the resume
    set_enabled(destination, True)
    tasks.tick()
    run_queued(queued)
    redelivery.refresh_from_db()
    assert redelivery.status == DeliveryStatus.DELIVERED
    assert len(partner.requests) == 1


def test_a_dead_workers_delivery_to_a_paused_destination_waits_without_the_reaper_spinning(
    destination, partner, queued
):
    # Given a paused destination's delivery whose worker died
    set_enabled(destination, False)
    stale = Delivery.objects.create(
        destination=destination, kind="realtime", body=b"{}", user_count=0,
        lease_until=timezone.now() - dt.timedelta(seconds=1),
    )

    # When beat takes it back and a worker runs the task, then beat ticks again
    tasks.tick()
    run_queued(queued)
    tasks.tick()

    # Then nothing was sent and nothing more was queued: it waits for the resume
    assert partner.requests == []
    assert queued == []
    stale.refresh_from_db()
    assert (stale.status, stale.lease_until) == (DeliveryStatus.PENDING, None)


def test_a_retry_waiting_when_the_destination_is_paused_waits_for_the_resume(
    destination, partner, queued, monkeypatch
):
    # Given a delivery whose first attempt fails, and a pause during the retry wait
    partner.script = [Reply(status=500), Reply()]
    delivery = Delivery.objects.create(
        destination=destination, kind="realtime", body=b"{}", user_count=0,
        lease_until=lease_until(destination=destination, now=timezone.now()),
    )
    pause = waiting_with(lambda _: set_enabled(destination, False))
    monkeypatch.setattr(rounds, "wait_unless_stopping", pause)

    # When it is sent
    rounds.send_deliveries(destination=destination, deliveries=[delivery])

    # Then the retry waits
    assert len(partner.requests) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.lease_until) == (DeliveryStatus.PENDING, None)

    # And goes out once the destination is resumed, as its second attempt
    set_enabled(destination, True)
    tasks.tick()
    run_queued(queued)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert list(delivery.attempts.values_list("number", "status_code")) == [(1, 500), (2, 200)]
