"""End to end with several workers: a killed worker's device is sent again, isolation, no double sends."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from django.db.models import Q

from delivery.models import Delivery, DeliveryStatus, DestinationDevice
from tests.delivery.pending_work import map_segments
from tests.delivery.slots import slot_holders
from tests.e2e.steps import SEGMENT, ingest, qualify, user_ids, wait_until
from tests.factories import DestinationFactory
from tests.local_partner import Received, Reply, start_partner

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]



def all_sent(destination, *, devices: int) -> bool:
    """Every device has a state row and none is pending or in flight."""
    states = DestinationDevice.objects.filter(destination=destination)
    waiting = states.filter(Q(pending_since__isnull=False) | Q(in_flight_delivery__isnull=False))
    return states.count() == devices and not waiting.exists()


def test_a_device_held_by_a_killed_worker_is_sent_again_within_60_s(celery_stack, operator_client, partner):
    destination = DestinationFactory(url=partner.url, max_wait_ms=0, timeout_ms=2000, retry_delay_ms=100)
    map_segments(destination, SEGMENT)
    held: list[Received] = []

    def hold_the_first_request(received: Received) -> Reply:
        if not held:
            held.append(received)
            return Reply(delay_s=10)
        return Reply()

    partner.responder = hold_the_first_request
    ingest(operator_client, [qualify("device")])
    [first] = partner.wait_for_requests(1, timeout_s=5)

    celery_stack.kill("worker")  # while it waits for the partner's answer
    killed_at = time.monotonic()
    celery_stack.start_worker("replacement")
    first, second = partner.wait_for_requests(2, timeout_s=60)

    assert second.at - killed_at < 60
    assert user_ids(second) == ["device"]
    assert second.body == first.body
    assert second.headers["X-AAMDest-Delivery-Id"] == first.headers["X-AAMDest-Delivery-Id"]
    delivery = Delivery.objects.get()
    wait_until(lambda: Delivery.objects.filter(status=DeliveryStatus.DELIVERED).exists(), timeout_s=5)
    assert list(delivery.attempts.values_list("number", "status_code")) == [(1, 200)]


@pytest.mark.parametrize("plain", [False, True], ids=["threads-flags", "plain-command"])
def test_a_partner_timing_out_does_not_hold_back_another_destination(
    celery_stack, operator_client, partner, local_network, settings, plain
):
    if plain:  # `celery -A aamdest worker` alone: the app's configuration must make isolation hold
        celery_stack.kill("worker")
        celery_stack.start_worker("plain", plain=True)
        assert "(thread)" in celery_stack.log("plain")  # the banner: "concurrency: 16 (thread)"
    stalling = start_partner(local_network)
    stalling.script = [Reply(delay_s=5)]
    slow = DestinationFactory(url=stalling.url, max_users_per_request=1, max_wait_ms=0, retry_delay_ms=100)
    map_segments(slow, 1)
    healthy = DestinationFactory(url=partner.url, max_wait_ms=300)
    map_segments(healthy, 2)
    try:
        for index in range(6):  # each wave starts one more flush of `slow`, each stuck in a 3 s timeout
            ingest(operator_client, [qualify(f"slow-{index}", 1)])
            time.sleep(0.15)
        slots = settings.AAMDEST_DESTINATION_CONCURRENCY
        wait_until(lambda: slot_holders(destination_id=slow.pk) == slots, timeout_s=5)

        accepted = ingest(operator_client, [qualify("healthy", 2)])
        [received] = partner.wait_for_requests(1, timeout_s=5)

        assert received.at - accepted <= 0.3 + 1  # max_wait_ms + 1 s
        assert slot_holders(destination_id=slow.pk) == slots
    finally:
        stalling.stop()


def test_two_workers_never_send_the_same_device(celery_stack, operator_client, partner):
    celery_stack.start_worker("second")
    destination = DestinationFactory(url=partner.url, max_wait_ms=100, retry_delay_ms=50)
    segments = list(range(100, 110))
    map_segments(destination, *segments)
    partner.script = [Reply(delay_s=0.05)]

    for wave, segment_id in enumerate(segments):
        # "shared" changes in every wave: it may be sent several times, never twice at once
        events = [qualify(f"w{wave}-d{index}", segment_id) for index in range(23)]
        ingest(operator_client, [*events, qualify("shared", segment_id)])
        time.sleep(0.05)
    wait_until(lambda: all_sent(destination, devices=231), timeout_s=20)

    time.sleep(0.5)  # a stray second send would arrive by now
    sent = Counter(aam_uuid for received in partner.requests for aam_uuid in user_ids(received))
    assert {aam_uuid for aam_uuid in sent if aam_uuid != "shared"} == {
        f"w{wave}-d{index}" for wave in range(10) for index in range(23)
    }
    assert {count for aam_uuid, count in sent.items() if aam_uuid != "shared"} == {1}
    holding_shared = Delivery.objects.filter(devices__aam_uuid="shared").order_by("created_at")
    spans = list(holding_shared.values_list("created_at", "finished_at"))
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))
    assert set(Delivery.objects.values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}
    assert all("Task delivery.tasks" in celery_stack.log(name) for name in ("worker", "second"))
