"""Sending against a real local HTTPS partner: attempts, retries, rows written, leases, redelivery."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import types

import pytest
from django.utils import timezone

from aamdest.logging import JsonFormatter
from delivery.coordination import scheduling_client
from delivery.leases import reap_expired_deliveries
from delivery.models import Attempt, Delivery, DeliveryKind, DeliveryStatus, DestinationDevice
from delivery.realtime.claiming import claim_due_requests
from delivery.sending import attempts
from delivery.sending import rounds as sending
from delivery.sending.attempts import Sending
from delivery.sending.rounds import (
    RedeliveryConflict,
    create_redelivery,
    send_deliveries,
    send_delivery,
    send_test_document,
)
from destinations.models import Destination
from destinations.signing import sign_body
from tests.delivery.pending_work import map_segments, pending_devices
from tests.factories import DestinationFactory
from tests.local_partner import Received, Reply

pytestmark = pytest.mark.django_db

SEGMENT = 14356
KEY = "sample_partner_private_key"


@pytest.fixture
def destination(partner):
    destination = DestinationFactory(url=partner.url, max_wait_ms=0, retry_delay_ms=50, timeout_ms=3000)
    map_segments(destination, SEGMENT)
    return destination


def claim(destination, count: int = 1) -> list[Delivery]:
    now = timezone.now()
    pending_devices(destination, count, pending_since=now - dt.timedelta(seconds=1), segment_id=SEGMENT)
    return claim_due_requests(destination=destination, now=now, max_requests=10)


def attempts_of(delivery: Delivery) -> list[tuple[int, int | None, str | None]]:
    return list(delivery.attempts.order_by("number").values_list("number", "status_code", "reason"))


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
    assert (state.in_flight_delivery_id, state.last_sent_at) == (None, None)
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


def test_the_partner_can_verify_the_hmac_signature_of_the_exact_bytes(partner, destination):
    destination.auth_mode, destination.signing_algorithm = "hmac", "sha1"
    destination.signing_header, destination.signing_key = "X-Partner-Signature", KEY
    destination.save()
    [delivery] = claim(destination)

    send_deliveries(destination=destination, deliveries=[delivery])

    [received] = partner.requests
    expected = sign_body(body=received.body, key=KEY, algorithm="sha1")
    assert received.headers["X-Partner-Signature"] == expected
    assert KEY not in str(received.headers)


def test_a_retry_is_signed_with_the_keys_in_force(partner, destination, monkeypatch):
    destination.auth_mode, destination.signing_key = "hmac", KEY
    destination.save()
    partner.script = [Reply(status=500), Reply(status=200)]
    [delivery] = claim(destination)

    def rotate_keys_while_waiting(seconds: float) -> None:
        Destination.objects.filter(pk=destination.pk).update(new_signing_key="next-key")
        time.sleep(seconds)

    monkeypatch.setattr(sending, "time", types.SimpleNamespace(sleep=rotate_keys_while_waiting,
                                                                monotonic=time.monotonic))
    send_deliveries(destination=destination, deliveries=[delivery])

    first, second = partner.requests
    assert "X-Signature-New" not in first.headers
    assert second.headers["X-Signature"] == sign_body(body=second.body, key=KEY, algorithm="sha256")
    new_signature = sign_body(body=second.body, key="next-key", algorithm="sha256")
    assert second.headers["X-Signature-New"] == new_signature


def test_one_log_line_per_attempt_with_the_outcome_and_no_secret(partner, destination, caplog):
    destination.auth_mode, destination.signing_key = "hmac", KEY
    destination.save()
    partner.script = [Reply(status=500), Reply(status=200)]
    [delivery] = claim(destination)

    with caplog.at_level(logging.INFO, logger="aamdest.delivery"):
        send_deliveries(destination=destination, deliveries=[delivery])

    records = [r for r in caplog.records if r.name == "aamdest.delivery"]
    assert [(r.delivery_id, r.attempt, r.status_code, r.reason) for r in records] == [
        (delivery.pk, 1, 500, "status"), (delivery.pk, 2, 200, None)
    ]
    assert all(r.destination == destination.pk and r.duration_ms >= 0 for r in records)
    signature = partner.requests[0].headers["X-Signature"]
    assert not any(KEY in r.getMessage() or signature in r.getMessage() for r in records)


def test_with_json_logs_each_attempt_is_one_json_object_with_its_fields(partner, destination, caplog):
    # Given AAMDEST_LOG_FORMAT=json's formatter and a partner failing once
    partner.script = [Reply(status=503), Reply(status=200)]
    [delivery] = claim(destination)

    # When the delivery is sent
    with caplog.at_level(logging.INFO, logger="aamdest.delivery"):
        send_deliveries(destination=destination, deliveries=[delivery])

    # Then each attempt's line is a JSON object naming destination, delivery, attempt and outcome
    formatter = JsonFormatter()
    lines = [json.loads(formatter.format(r)) for r in caplog.records if r.name == "aamdest.delivery"]
    assert [
        {key: line[key] for key in ("destination", "delivery_id", "attempt", "status_code", "reason")}
        for line in lines
    ] == [
        {"destination": destination.pk, "delivery_id": delivery.pk, "attempt": 1, "status_code": 503,
         "reason": "status"},
        {"destination": destination.pk, "delivery_id": delivery.pk, "attempt": 2, "status_code": 200,
         "reason": None},
    ]
    assert all(isinstance(line["duration_ms"], int) for line in lines)
    assert [line["level"] for line in lines] == ["WARNING", "INFO"]


def test_a_worker_whose_lease_was_taken_over_makes_no_retry(partner, destination, monkeypatch):
    partner.script = [Reply(status=500), Reply(status=200)]
    [delivery] = claim(destination)

    def reaper_takes_over_while_waiting(seconds: float) -> None:
        Delivery.objects.filter(pk=delivery.pk).update(lease_until=timezone.now() + dt.timedelta(minutes=1))

    monkeypatch.setattr(sending, "time", types.SimpleNamespace(sleep=reaper_takes_over_while_waiting,
                                                                monotonic=time.monotonic))
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

    monkeypatch.setattr(sending, "time", types.SimpleNamespace(sleep=sleep, monotonic=time.monotonic))

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


def test_the_reaper_takes_each_expired_lease_once(destination):
    expired, live = claim(destination, 15)
    Delivery.objects.filter(pk=expired.pk).update(lease_until=timezone.now() - dt.timedelta(seconds=1))
    now = timezone.now()

    assert reap_expired_deliveries(now=now) == [expired.pk]
    assert reap_expired_deliveries(now=now) == []
    expired.refresh_from_db()
    assert expired.lease_until > now


def test_a_redelivery_sends_the_same_bytes_and_document_id(partner, destination):
    partner.script = [Reply(status=500)]
    [original] = claim(destination)
    send_deliveries(destination=destination, deliveries=[original])
    partner.script = [Reply(status=200)]

    redelivery = create_redelivery(delivery=original)
    send_delivery(delivery_id=redelivery.pk)

    redelivery.refresh_from_db()
    assert (redelivery.kind, redelivery.status) == (DeliveryKind.REDELIVERY, DeliveryStatus.DELIVERED)
    assert redelivery.redelivery_of_id == original.pk
    assert list(redelivery.devices.values_list("aam_uuid", flat=True)) == ["dev-000"]
    assert partner.requests[-1].body == partner.requests[0].body == bytes(original.body)
    assert partner.requests[-1].headers["X-AAMDest-Delivery-Id"] == str(original.document_id)


def test_a_pending_delivery_cannot_be_redelivered(destination):
    [delivery] = claim(destination)

    with pytest.raises(RedeliveryConflict):
        create_redelivery(delivery=delivery)


def test_a_test_document_lists_the_mapped_segments_and_is_sent_once(partner, destination):
    partner.script = [Reply(status=500)]

    delivery = send_test_document(destination=destination)

    assert (delivery.kind, delivery.status) == (DeliveryKind.TEST, DeliveryStatus.FAILED)
    assert attempts_of(delivery) == [(1, 500, "status")]
    [user] = json.loads(partner.requests[0].body)["Users"]
    assert [(s["Segment_ID"], s["Status"]) for s in user["Segments"]] == [(str(SEGMENT), "1")]


def test_a_test_document_without_mappings_carries_a_sample_segment(partner):
    destination = DestinationFactory(url=partner.url)

    delivery = send_test_document(destination=destination)

    assert delivery.status == DeliveryStatus.DELIVERED
    [user] = json.loads(partner.requests[0].body)["Users"]
    assert len(user["Segments"]) == 1 and user["Segments"][0]["Status"] == "1"


class OAuthPartner:
    """Serves /oauth/token and accepts only the latest token it issued on the data path."""

    def __init__(self) -> None:
        self.issued: list[str] = []
        self.token_status = 200

    def reply(self, received: Received) -> Reply:
        if received.path.endswith("/oauth/token"):
            if self.token_status != 200:
                return Reply(status=self.token_status, body=b'{"error": "server_error"}')
            self.issued.append(f"token-{len(self.issued) + 1}")
            return Reply(body=json.dumps({"access_token": self.issued[-1], "token_type": "bearer"}).encode())
        if self.issued and received.headers.get("Authorization") == f"Bearer {self.issued[-1]}":
            return Reply(status=200)
        return Reply(status=401)


@pytest.fixture
def oauth_partner(partner, destination) -> OAuthPartner:
    scheduling_client().flushdb()  # the token cache
    oauth = OAuthPartner()
    partner.responder = oauth.reply
    destination.auth_mode = "oauth2"
    destination.oauth_token_url = partner.url.replace("/aam", "/oauth/token")
    destination.oauth_client_id, destination.oauth_client_secret = "client", "s3cret"
    destination.save()
    yield oauth
    scheduling_client().flushdb()


def test_an_oauth_delivery_carries_the_bearer_token(partner, destination, oauth_partner):
    [delivery] = claim(destination)

    send_deliveries(destination=destination, deliveries=[delivery])

    token_request, data_request = partner.requests
    assert token_request.body == b"grant_type=client_credentials"
    assert data_request.headers["Authorization"] == "Bearer token-1"
    assert attempts_of(delivery) == [(1, 200, None)]


def test_an_oauth_401_discards_the_token_and_the_retry_uses_a_new_one(partner, destination, oauth_partner):
    [first, second] = claim(destination, 15)
    send_deliveries(destination=destination, deliveries=[first])
    oauth_partner.issued.append("token-revoked")  # the partner stops accepting token-1

    send_deliveries(destination=destination, deliveries=[second])

    data_requests = [r for r in partner.requests if r.path.endswith("/aam")]
    assert [r.headers["Authorization"] for r in data_requests] == [
        "Bearer token-1", "Bearer token-1", "Bearer token-3"
    ]
    assert attempts_of(second) == [(1, 401, "status"), (2, 200, None)]


def test_a_token_endpoint_failure_fails_the_attempt_with_reason_token(partner, destination, oauth_partner):
    oauth_partner.token_status = 500
    [delivery] = claim(destination)

    send_deliveries(destination=destination, deliveries=[delivery])

    assert [r.path for r in partner.requests] == ["/oauth/token", "/oauth/token"]
    assert attempts_of(delivery) == [(1, None, "token"), (2, None, "token")]
    error = delivery.attempts.first().error
    assert "token" in error and "500" in error
    assert "s3cret" not in error


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
