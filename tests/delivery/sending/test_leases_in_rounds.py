"""Leases while sending: a lost lease stops the round, a long wait renews it, the reaper takes the expired."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from delivery.leases import reap_expired_deliveries
from delivery.models import Delivery, DeliveryStatus
from delivery.sending import rounds as sending
from delivery.sending.attempts import Sending
from delivery.sending.rounds import send_deliveries
from tests.delivery.sending.claims import attempts_of, claim, waiting_with
from tests.local_partner import Reply

pytestmark = pytest.mark.django_db


def test_a_worker_whose_lease_was_taken_over_makes_no_retry(partner, destination, monkeypatch):
    partner.script = [Reply(status=500), Reply(status=200)]
    [delivery] = claim(destination)

    def reaper_takes_over_while_waiting(seconds: float) -> None:
        Delivery.objects.filter(pk=delivery.pk).update(lease_until=timezone.now() + dt.timedelta(minutes=1))

    monkeypatch.setattr(sending, "wait_unless_stopping", waiting_with(reaper_takes_over_while_waiting))
    send_deliveries(destination=destination, deliveries=[delivery])

    assert len(partner.requests) == 1
    assert attempts_of(delivery) == [(1, 500, "status")]
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING


def test_a_long_retry_wait_is_slept_in_slices_renewing_the_lease(partner, destination, monkeypatch):
    # Given the largest settings: a lease covers one attempt and one 15 s slice of the wait
    destination.timeout_ms, destination.retry_delay_ms = 30_000, 40_000
    destination.save()
    partner.script = [Reply(status=500), Reply(status=200)]
    [delivery] = claim(destination)
    assert delivery.lease_until - delivery.created_at < dt.timedelta(seconds=56)
    slept, leases = [], []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        leases.append(Delivery.objects.get(pk=delivery.pk).lease_until)

    monkeypatch.setattr(sending, "wait_unless_stopping", waiting_with(sleep))

    # When the first attempt fails and the 40 s wait passes
    send_deliveries(destination=destination, deliveries=[delivery])

    # Then the wait went in slices of at most 15 s, the lease renewed before each further slice,
    # and the retry was delivered
    assert slept == [15.0, 15.0, 10.0]
    assert leases[0] < leases[1] < leases[2]
    assert attempts_of(delivery) == [(1, 500, "status"), (2, 200, None)]


def test_send_delivery_leaves_a_delivery_another_worker_took_over(partner, destination):
    [delivery] = claim(destination)
    stale = Delivery.objects.get(pk=delivery.pk)
    Delivery.objects.filter(pk=delivery.pk).update(lease_until=timezone.now() + dt.timedelta(minutes=1))

    sending._send_rounds(
        destination=destination,
        sendings=[Sending(delivery=stale, attempt_number=1, lease=stale.lease_until)],
        max_retries=1,
        renew_first=True,
    )

    assert partner.requests == []



def test_the_reaper_takes_each_expired_lease_once(destination):
    expired, live = claim(destination, 15)
    Delivery.objects.filter(pk=expired.pk).update(lease_until=timezone.now() - dt.timedelta(seconds=1))
    now = timezone.now()

    assert reap_expired_deliveries(now=now) == [expired.pk]
    assert reap_expired_deliveries(now=now) == []
    expired.refresh_from_db()
    assert expired.lease_until > now
