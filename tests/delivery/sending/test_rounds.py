"""Sending a claim against a real local HTTPS partner: answers, retries, deadlines, rows written."""

from __future__ import annotations

import json
import time

import pytest

from delivery.models import DeliveryStatus, DestinationDevice
from delivery.sending import attempts
from delivery.sending.rounds import send_deliveries
from destinations.models import Destination
from tests.delivery.sending.claims import attempts_of, claim
from tests.local_partner import Received, Reply

pytestmark = pytest.mark.django_db


def test_a_200_delivers_writes_one_attempt_and_frees_the_devices(partner, destination, settings):
    [delivery] = claim(destination, 3)

    send_deliveries(destination=destination, deliveries=[delivery])

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert delivery.finished_at is not None and delivery.lease_until is None
    assert attempts_of(delivery) == [(1, 200, None)]
    [received] = partner.requests
    assert received.body == bytes(delivery.body)
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["X-AAMDest-Delivery-Id"] == str(delivery.document_id)
    assert received.headers["User-Agent"] == f"aamdest/{settings.VERSION}"
    states = DestinationDevice.objects.filter(destination=destination)
    assert all(state.in_flight_delivery_id is None and state.last_sent_at for state in states)
    destination.refresh_from_db()
    assert destination.last_delivery_status == DeliveryStatus.DELIVERED
    assert destination.last_delivery_at == delivery.finished_at


def test_a_204_is_a_failure_retried_once_then_failed(partner, destination):
    partner.script = [Reply(status=204, body=b"")]
    [delivery] = claim(destination)

    send_deliveries(destination=destination, deliveries=[delivery])

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED
    assert attempts_of(delivery) == [(1, 204, "status"), (2, 204, "status")]
    assert len(partner.requests) == 2
    state = DestinationDevice.objects.get(destination=destination)
    # Freed; its last send stays the claim's (a failed request counts for the 3-day refresh rule).
    assert state.in_flight_delivery_id is None and state.last_sent_at < delivery.finished_at
    destination.refresh_from_db()
    assert destination.last_delivery_status == DeliveryStatus.FAILED


def test_a_500_then_200_is_delivered_on_the_retry_with_the_same_bytes_and_id(partner, destination):
    partner.script = [Reply(status=500, body=b"oops"), Reply(status=200)]
    [delivery] = claim(destination)

    send_deliveries(destination=destination, deliveries=[delivery])

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert attempts_of(delivery) == [(1, 500, "status"), (2, 200, None)]
    assert delivery.attempts.get(number=1).response_excerpt == "oops"
    first, second = partner.requests
    assert first.body == second.body == bytes(delivery.body)
    assert first.headers["X-AAMDest-Delivery-Id"] == second.headers["X-AAMDest-Delivery-Id"]
    assert second.at - first.at >= 0.05  # retry_delay_ms


def test_no_retry_is_made_when_max_retries_is_zero(partner, destination):
    partner.script = [Reply(status=500)]
    destination.max_retries = 0
    [delivery] = claim(destination)

    send_deliveries(destination=destination, deliveries=[delivery])

    assert attempts_of(delivery) == [(1, 500, "status")]


def test_a_slow_partner_times_out_at_the_deadline_on_both_attempts(partner, destination):
    partner.script = [Reply(delay_s=1.5)]
    destination.timeout_ms = 300
    [delivery] = claim(destination)

    started = time.monotonic()
    send_deliveries(destination=destination, deliveries=[delivery])

    assert time.monotonic() - started < 1.5
    assert attempts_of(delivery) == [(1, None, "timeout"), (2, None, "timeout")]
    assert all(250 <= ms < 800 for ms in delivery.attempts.values_list("duration_ms", flat=True))


def test_deliveries_of_one_claim_go_concurrently_and_only_failures_are_retried(partner, destination):
    seen: set[str] = set()

    def first_document_fails_once(received: Received) -> Reply:
        users = json.loads(received.body)["Users"]
        if users[0]["AAM_UUID"] == "dev-000" and "dev-000" not in seen:
            seen.add("dev-000")
            return Reply(status=503)
        return Reply(status=200, delay_s=0.3)

    partner.responder = first_document_fails_once
    deliveries = claim(destination, 25)

    started = time.monotonic()
    send_deliveries(destination=destination, deliveries=deliveries)

    assert time.monotonic() - started < 0.9 + 0.5  # three 0.3 s answers at once, then one retry
    assert [attempts_of(d) for d in deliveries] == [[(1, 503, "status"), (2, 200, None)], [(1, 200, None)],
                                                    [(1, 200, None)]]
    assert len(partner.requests) == 4



def test_a_delivery_to_a_non_ascii_url_ends_failed_with_its_attempts(partner, destination):
    [delivery] = claim(destination)
    Destination.objects.filter(pk=destination.pk).update(url=partner.url + "/donn\u00e9es")
    destination.refresh_from_db()

    send_deliveries(destination=destination, deliveries=[delivery])

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED
    assert attempts_of(delivery) == [(1, None, "connection"), (2, None, "connection")]
    assert "non-ASCII" in delivery.attempts.first().error
    assert partner.requests == []
    state = DestinationDevice.objects.get(destination=destination)
    assert state.in_flight_delivery_id is None


def test_a_request_that_cannot_be_built_fails_alone_and_others_go(partner, destination, monkeypatch):
    first, second = claim(destination, 15)
    real = attempts.auth_headers_for

    def auth_headers_for(*, destination, body, deadline_ms):
        if body == bytes(first.body):
            return {"Authorization": "Bearer a\r\nX-Injected: secret"}
        return real(destination=destination, body=body, deadline_ms=deadline_ms)

    monkeypatch.setattr(attempts, "auth_headers_for", auth_headers_for)

    send_deliveries(destination=destination, deliveries=[first, second])

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == DeliveryStatus.FAILED
    assert attempts_of(first) == [(1, None, "connection"), (2, None, "connection")]
    error = first.attempts.first().error
    assert error.startswith("not sent: the request could not be built: ") and "secret" not in error
    assert second.status == DeliveryStatus.DELIVERED
    assert attempts_of(second) == [(1, 200, None)]
