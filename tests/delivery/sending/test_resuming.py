"""`send_delivery` on a delivery already under way: the next attempt, one more, a recorded success, none."""

from __future__ import annotations

import pytest
from django.utils import timezone

from delivery.models import Attempt, Delivery, DeliveryStatus, DestinationDevice
from delivery.sending.rounds import send_delivery
from tests.delivery.sending.claims import attempts_of, claim
from tests.local_partner import Reply

pytestmark = pytest.mark.django_db


def test_send_delivery_resumes_at_the_next_attempt_number(partner, destination):
    [delivery] = claim(destination)
    Attempt.objects.create(delivery=delivery, number=1, started_at=timezone.now(), duration_ms=3000,
                           reason="timeout")

    send_delivery(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert attempts_of(delivery) == [(1, None, "timeout"), (2, 200, None)]


def test_send_delivery_gives_a_delivery_that_used_all_its_attempts_one_more(partner, destination):
    partner.script = [Reply(status=502)]
    [delivery] = claim(destination)
    for number in (1, 2):
        Attempt.objects.create(delivery=delivery, number=number, started_at=timezone.now(), duration_ms=1,
                               status_code=502, reason="status")

    send_delivery(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED
    assert [number for number, _, _ in attempts_of(delivery)] == [1, 2, 3]
    assert len(partner.requests) == 1


def test_send_delivery_marks_a_recorded_success_delivered_without_sending_again(partner, destination):
    [delivery] = claim(destination)
    Attempt.objects.create(
        delivery=delivery, number=1, started_at=timezone.now(), duration_ms=5, status_code=200
    )

    send_delivery(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert partner.requests == []
    assert DestinationDevice.objects.get(destination=destination).last_sent_at is not None


def test_send_delivery_returns_quietly_for_a_gone_or_ended_delivery(partner, destination):
    [delivery] = claim(destination)
    Delivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.FAILED)

    send_delivery(delivery_id=delivery.pk)
    send_delivery(delivery_id=delivery.pk + 1000)

    assert partner.requests == []
