"""The 3-day refresh rule while a device's request is in flight, and after it failed (CONTRACT §2.5)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from delivery.models import DeliveryStatus, DestinationDevice
from delivery.realtime.claiming import claim_due_requests
from delivery.sending.rounds import send_deliveries
from tests.delivery.lifecycle_events import apply, qualify
from tests.delivery.pending_work import SPORTS
from tests.local_partner import Reply

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 2, 2, 9, 0, tzinfo=dt.UTC)
UUID = "19393572368547369350319949416899715727"


def is_pending(destination) -> bool:
    return DestinationDevice.objects.get(destination=destination, device_id=UUID).pending_since is not None


def test_a_requalification_while_the_first_request_is_in_flight_queues_no_second_send(
    partner, destination, clock
):
    # Given a device whose first request is claimed but not yet answered
    apply(qualify(UUID, SPORTS, at=T0))
    deliveries = claim_due_requests(destination=destination, now=timezone.now(), max_requests=10)

    # When it re-qualifies the same segment a minute later, then the request is delivered
    clock.move_to(T0 + dt.timedelta(minutes=1))
    apply(qualify(UUID, SPORTS, at=T0 + dt.timedelta(minutes=1)))
    send_deliveries(destination=destination, deliveries=deliveries)

    # Then nothing more is owed: in flight counts as sent
    assert not is_pending(destination)
    assert len(partner.requests) == 1


def test_a_requalification_after_the_request_failed_queues_no_second_send(partner, destination, clock):
    # Given a device whose first request failed (its document stays redeliverable)
    partner.script = [Reply(status=500)]
    destination.retry_delay_ms = 0
    destination.save()
    apply(qualify(UUID, SPORTS, at=T0))
    [delivery] = claim_due_requests(destination=destination, now=timezone.now(), max_requests=10)
    send_deliveries(destination=destination, deliveries=[delivery])
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED

    # When it re-qualifies the same segment a minute later
    clock.move_to(T0 + dt.timedelta(minutes=1))
    apply(qualify(UUID, SPORTS, at=T0 + dt.timedelta(minutes=1)))

    # Then no second send of the same state is queued (README "Decisions")
    assert not is_pending(destination)


def test_a_requalification_three_days_after_the_claim_sends_again(partner, destination, clock):
    # Given a device sent three days ago
    apply(qualify(UUID, SPORTS, at=T0))
    deliveries = claim_due_requests(destination=destination, now=timezone.now(), max_requests=10)
    send_deliveries(destination=destination, deliveries=deliveries)

    # When it re-qualifies three days later
    clock.move_to(T0 + dt.timedelta(days=3, seconds=1))
    apply(qualify(UUID, SPORTS, at=T0 + dt.timedelta(days=3, seconds=1)))

    # Then it is pending again
    assert is_pending(destination)
