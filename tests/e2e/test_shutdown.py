"""End to end, SIGTERM: a worker finishes its attempt, hands back its retry wait, exits soon (CONTRACT §6)."""

from __future__ import annotations

import signal
import time

import pytest

from delivery.models import Delivery, DeliveryStatus
from delivery.observability.worker_heartbeat import read_heartbeat
from tests.delivery.pending_work import map_segments
from tests.e2e.steps import SEGMENT, ingest, qualify, user_ids, wait_until
from tests.factories import DestinationFactory
from tests.local_partner import Reply

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# The longest a warm shutdown may take here: no attempt is in flight, only a retry wait to give up.
EXIT_WITHIN_S = 15


def test_sigterm_hands_a_delivery_waiting_for_its_retry_to_another_worker(
    celery_stack, operator_client, partner
):
    # Given a delivery whose first attempt failed, its worker waiting 30 s for the retry
    destination = DestinationFactory(url=partner.url, max_wait_ms=0, timeout_ms=2000, retry_delay_ms=30_000)
    map_segments(destination, SEGMENT)
    partner.script = [Reply(status=500), Reply()]
    ingest(operator_client, [qualify("device")])
    partner.wait_for_requests(1, timeout_s=10)
    delivery = wait_until(lambda: Delivery.objects.filter(attempts__number=1).first(), timeout_s=5)
    celery_stack.start_worker("second")

    # When the worker holding it (beating) is told to stop
    assert read_heartbeat("worker@e2e") is not None
    signalled_at = time.monotonic()
    took_s = celery_stack.terminate("worker", timeout_s=EXIT_WITHIN_S)

    # Then it exits cleanly within seconds, and the second worker retries the delivery at once
    assert celery_stack.processes["worker"].returncode == 0
    assert took_s < EXIT_WITHIN_S
    assert "handed back to another" in celery_stack.log("worker")
    assert read_heartbeat("worker@e2e") is None  # a worker stopped cleanly leaves no heartbeat behind
    first, second = partner.wait_for_requests(2, timeout_s=15)
    assert second.at - signalled_at < 10  # not after the lease (15 s of wait + 10 s margin), nor the 30 s
    assert second.body == first.body and user_ids(second) == ["device"]
    wait_until(lambda: Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.DELIVERED).exists(),
               timeout_s=5)
    attempts = delivery.attempts.order_by("number").values_list("number", "status_code")
    assert list(attempts) == [(1, 500), (2, 200)]
    time.sleep(1)  # a stray third send would arrive by now
    assert len(partner.requests) == 2
    assert "delivery.tasks.send_delivery_task" in celery_stack.log("second")


def test_sigterm_lets_an_attempt_in_flight_finish_and_claims_nothing_more(
    celery_stack, operator_client, partner
):
    # Given a worker waiting for a slow partner's answer
    destination = DestinationFactory(url=partner.url, max_wait_ms=0, timeout_ms=3000, retry_delay_ms=100)
    map_segments(destination, SEGMENT)
    partner.script = [Reply(delay_s=1.5), Reply()]
    ingest(operator_client, [qualify("first")])
    partner.wait_for_requests(1, timeout_s=10)

    # When it is told to stop, and an event comes meanwhile
    celery_stack.processes["worker"].send_signal(signal.SIGTERM)
    ingest(operator_client, [qualify("later")])
    celery_stack.terminate("worker", timeout_s=EXIT_WITHIN_S)

    # Then the answer in flight was recorded (delivered once), and the later device waits for another worker
    assert Delivery.objects.get().status == DeliveryStatus.DELIVERED
    assert [user_ids(received) for received in partner.requests] == [["first"]]
    celery_stack.start_worker("second")
    partner.wait_for_requests(2, timeout_s=10)
    assert user_ids(partner.requests[1]) == ["later"]
