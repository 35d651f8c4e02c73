"""aamdest's OAuth 2.0 client against the reference partner's token endpoint (CONTRACT §3, §6).

The receiver issues bearer tokens at `/oauth/token` and accepts only those; a
counting proxy in front of it shows how many token requests aamdest made.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.db import connections
from django.utils import timezone

from delivery.models import Delivery
from delivery.realtime.claiming import claim_due_requests
from delivery.sending.rounds import send_deliveries, send_test_document
from destinations.models import Destination
from tests.delivery.pending_work import map_segments, pending_devices
from tests.local_partner import StallingServer
from tests.partner.destinations_at_receiver import (
    CLIENT_ID,
    CLIENT_SECRET,
    attempts_of,
    configure_oauth,
    last_test_delivery,
    oauth_receiver,
    send_test,
)


@pytest.mark.parametrize("client_auth", ["basic", "body"])
def test_the_receiver_issues_a_token_for_basic_or_body_credentials_and_accepts_it(
    operator_client, receivers, client_auth
):
    receiver = oauth_receiver(receivers)
    destination = configure_oauth(operator_client, receiver, oauth_client_auth=client_auth)

    answers = [send_test(operator_client, destination) for _ in range(2)]

    assert [answer["status_code"] for answer in answers] == [200, 200]
    receiver.wait_for_line(f"accepted delivery {last_test_delivery(destination).document_id}")


def test_an_expired_token_is_renewed_before_the_receiver_would_refuse_it(
    operator_client, receivers, token_proxy
):
    # Given tokens that live 2 seconds
    receiver = oauth_receiver(receivers, "--token-ttl", "2")
    proxy = token_proxy(receiver)
    destination = configure_oauth(operator_client, receiver, token_url=proxy.url)

    # When sending now, within the token's life, and after it
    first = send_test(operator_client, destination)
    again = send_test(operator_client, destination)
    time.sleep(2.3)
    later = send_test(operator_client, destination)

    # Then one token served the first two, a new one the last, and none was refused
    assert [first["status_code"], again["status_code"], later["status_code"]] == [200, 200, 200]
    assert proxy.count == 2


def test_a_401_mid_stream_discards_the_token_and_the_retry_fetches_a_new_one(operator_client, receivers):
    # Given a token cached from an earlier send
    receiver = oauth_receiver(receivers)
    destination = configure_oauth(operator_client, receiver, max_retries=1, max_wait_ms=0)
    assert send_test(operator_client, destination)["status_code"] == 200

    # When the receiver restarts (forgetting the tokens it issued) and real-time traffic goes out
    restarted = receivers.restart(receiver, "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET)
    map_segments(destination, 14356)
    now = timezone.now()
    pending_devices(destination, 2, pending_since=now - dt.timedelta(seconds=1), segment_id=14356)
    [delivery] = claim_due_requests(destination=destination, now=now, max_requests=5)
    send_deliveries(destination=destination, deliveries=[delivery])

    # Then the first attempt got 401 and the retry, with a new token, got through
    delivery.refresh_from_db()
    assert attempts_of(delivery) == [(401, "status"), (200, None)]
    assert delivery.status == "delivered"
    restarted.wait_for_line(f"accepted delivery {delivery.document_id} AAM_Destination_Id 423 User_count 2")


def test_wrong_credentials_fail_the_attempt_with_reason_token_naming_the_endpoint(operator_client, receivers):
    receiver = oauth_receiver(receivers)
    destination = configure_oauth(operator_client, receiver, oauth_client_secret="not-the-secret")

    answer = send_test(operator_client, destination)

    assert answer["status_code"] is None
    assert answer["error"].startswith("token endpoint failed:") and "invalid_client" in answer["error"]
    assert "not-the-secret" not in answer["error"] and CLIENT_SECRET not in answer["error"]
    delivery = last_test_delivery(destination)
    assert delivery.status == "failed" and attempts_of(delivery) == [(None, "token")]


def test_a_stalled_token_endpoint_fails_with_reason_token_within_the_deadline(operator_client, receivers):
    # Given a token endpoint that accepts connections and never answers
    receiver = receivers.start()
    stalling = StallingServer()
    try:
        destination = configure_oauth(
            operator_client, receiver, token_url=f"https://127.0.0.1:{stalling.port}/token", timeout_ms=800
        )

        # When
        started = time.monotonic()
        answer = send_test(operator_client, destination)
        elapsed_s = time.monotonic() - started
    finally:
        stalling.stop()

    # Then
    assert answer["status_code"] is None and answer["error"].startswith("token endpoint failed:")
    assert "no complete answer within" in answer["error"]
    assert attempts_of(last_test_delivery(destination)) == [(None, "token")]
    assert last_test_delivery(destination).attempts.get().duration_ms <= 800 + 100
    assert elapsed_s < 0.8 + 1.0  # the deadline, plus the API call's own work


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_share_one_token_request(operator_client, receivers, token_proxy):
    # Given a token endpoint slow enough for every worker to need the token at once
    receiver = oauth_receiver(receivers)
    proxy = token_proxy(receiver, delay_s=0.3)
    destination = configure_oauth(operator_client, receiver, token_url=proxy.url)
    workers, barrier, outcomes = 6, threading.Barrier(6), []

    def worker() -> None:
        try:
            barrier.wait(timeout=10)
            outcomes.append(send_test_document(destination=Destination.objects.get(pk=destination.pk)).status)
        finally:
            connections.close_all()

    # When
    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    # Then every document went through, on one token
    assert outcomes == ["delivered"] * workers
    assert proxy.count == 1
    for delivery in Delivery.objects.filter(destination=destination):
        receiver.wait_for_line(f"accepted delivery {delivery.document_id}")
