"""End to end, the circuit breaker (CONTRACT §7): a real worker and beat, a partner switched down then up.

Bounded: the outage lasts ~25 s (the first probe comes 30 s after the opening and finds the
partner back), the drain a few seconds more, then one more alert run (5 s) to see no alert
repeat; the Retry-After test a few seconds. Each runs
on the Redis broker only: the brokers are covered by the other end-to-end tests, the
breaker's state is in PostgreSQL whatever the broker.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from django.utils import timezone

from delivery.alert_models import Alert
from delivery.alerts.channels import SIGNATURE_ALGORITHM, SIGNATURE_HEADER
from delivery.models import Delivery, DeliveryStatus
from destinations.models import ChangeAction, CircuitState, ConfigChange, Destination
from partner.verification import Signing
from tests.delivery.alerts.conftest import SIGNING_KEY
from tests.delivery.pending_work import map_segments
from tests.e2e.steps import SEGMENT, ingest, qualify, wait_until
from tests.factories import DestinationFactory
from tests.local_partner import Partner, Received, Reply, start_partner

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True),
              pytest.mark.parametrize("broker_url", ["redis"], indirect=True)]

THRESHOLD = 4


class Switch:
    """The failing partner's state: down (503) or up (200); records what it got while down."""

    def __init__(self, partner: Partner) -> None:
        self.is_down = True
        self.lock = threading.Lock()
        self.while_down: list[Received] = []
        partner.responder = self.answer

    def answer(self, received: Received) -> Reply:
        with self.lock:
            if self.is_down:
                self.while_down.append(received)
                return Reply(status=503, body=b"down for maintenance")
            return Reply()


def disqualify(aam_uuid: str) -> dict:
    return {"type": "disqualification", "aam_uuid": aam_uuid, "segment_id": SEGMENT}


def delivered_states(requests: list[Received]) -> dict[str, list[str]]:
    """Per device, the statuses of SEGMENT it was sent in `requests`, in order."""
    states: dict[str, list[str]] = {}
    for received in requests:
        for user in json.loads(received.body)["Users"]:
            states.setdefault(user["AAM_UUID"], []).extend(
                segment["Status"] for segment in user["Segments"] if segment["Segment_ID"] == str(SEGMENT)
            )
    return states


def circuit_actions(destination: Destination) -> list[str]:
    rows = ConfigChange.objects.filter(
        destination=destination, action__in=[ChangeAction.CIRCUIT_OPENED, ChangeAction.CIRCUIT_CLOSED]
    )
    return list(rows.order_by("id").values_list("action", flat=True))


FIRST = [f"first-{n:02d}" for n in range(10)]
LATER = [f"later-{n:02d}" for n in range(10)]


@pytest.fixture
def fast(local_network) -> Iterator[Partner]:
    """A second, healthy partner, for the destination beside the failing one."""
    partner = start_partner(local_network)
    yield partner
    partner.stop()


@pytest.fixture
def alert_receiver(worker_env: dict[str, str], local_network) -> Iterator[Partner]:
    """The workers' alert webhook: a third local partner, signed with SIGNING_KEY (set before they start)."""
    receiver = start_partner(local_network)
    worker_env.update(AAMDEST_ALERT_WEBHOOK_URL=receiver.url, AAMDEST_ALERT_SIGNING_KEY=SIGNING_KEY)
    yield receiver
    receiver.stop()


def assert_alerted_once_each_way(receiver: Partner, destination: Destination) -> None:
    """One signed `circuit_opened` then one `circuit_closed` POST naming `destination`, and no more
    after another alert run (beat queues `run_alerts` every 5 s)."""
    receiver.wait_for_requests(2, timeout_s=15)
    time.sleep(6)
    with receiver.lock:
        received = list(receiver.requests)
    bodies = [json.loads(request.body) for request in received]
    assert [body["event"] for body in bodies] == ["circuit_opened", "circuit_closed"]
    assert all(body["destination"] == {"id": destination.pk, "name": destination.name} for body in bodies)
    signing = Signing(keys=(SIGNING_KEY,), algorithm=SIGNATURE_ALGORITHM, header=SIGNATURE_HEADER)
    assert all(signing.is_signed(headers=request.headers, body=request.body) for request in received)
    assert Alert.objects.filter(destination=destination).count() == 2


def is_in_state(destination: Destination, state: str) -> bool:
    return Destination.objects.get(pk=destination.pk).circuit_state == state


def live_through_the_outage(operator_client, *, failing: Destination, fast: Partner, switch: Switch) -> int:
    """Devices change during the outage; the partner comes back before the first probe. Return the
    attempts it got while down."""
    ingest(operator_client, [qualify(aam_uuid) for aam_uuid in FIRST])
    wait_until(lambda: is_in_state(failing, CircuitState.OPEN), timeout_s=15)
    opened_at = time.monotonic()
    # More change while it is open: new devices, and five of the first leave the segment
    fast_count = len(fast.requests)
    sent_at = ingest(operator_client, [*(qualify(a) for a in LATER), *(disqualify(a) for a in FIRST[:5])])
    # The fast destination is not slowed by the failing one: its requests leave within max_wait + 1 s
    fast.wait_for_requests(fast_count + 1, timeout_s=5)
    assert fast.requests[fast_count].at - sent_at < 0.2 + 1.0
    # The partner comes back 25 s after the opening, before the first probe (30 s)
    time.sleep(max(0.0, opened_at + 25 - time.monotonic()))
    with switch.lock:
        switch.is_down = False
        return len(switch.while_down)


def test_an_outage_opens_the_circuit_a_probe_closes_it_and_nothing_is_lost(
    alert_receiver, celery_stack, operator_client, partner, fast
):
    # Given a failing partner (down) and a fast one beside it, both mapped to SEGMENT
    switch = Switch(partner)
    failing = DestinationFactory(name="failing", url=partner.url, max_wait_ms=200, max_retries=1,
                                 retry_delay_ms=100, max_users_per_request=5,
                                 circuit_failure_threshold=THRESHOLD)
    map_segments(failing, SEGMENT)
    map_segments(DestinationFactory(url=fast.url, max_wait_ms=200), SEGMENT)

    # When devices change during an outage that ends before the first probe
    attempts_while_down = live_through_the_outage(operator_client, failing=failing, fast=fast, switch=switch)

    # Then the probe closes the circuit, and every device arrives once, in its latest state
    wait_until(lambda: is_in_state(failing, CircuitState.CLOSED), timeout_s=15)
    everyone = [*FIRST, *LATER]
    wait_until(lambda: set(everyone) <= set(delivered_states_of_successes(partner, switch)), timeout_s=30)
    states = delivered_states_of_successes(partner, switch)
    assert all(states[a] == ["0"] for a in FIRST[:5])
    assert all(states[a] == ["1"] for a in [*FIRST[5:], *LATER])
    # During the outage aamdest made THRESHOLD attempts (and no probe: the first came after it)
    assert attempts_while_down == THRESHOLD
    # One opening and one closing in the change log, and the alert webhook got one of each
    assert circuit_actions(failing) == ["circuit_opened", "circuit_closed"]
    assert_alerted_once_each_way(alert_receiver, failing)
    failed = Delivery.objects.filter(destination=failing, status=DeliveryStatus.FAILED).count()
    assert failed == 2  # the two requests whose attempts opened it; their devices went out again
    # The last answers' rounds end too: nothing stays pending
    pending = Delivery.objects.filter(destination=failing, status=DeliveryStatus.PENDING)
    wait_until(lambda: not pending.exists(), timeout_s=10)


def delivered_states_of_successes(partner: Partner, switch: Switch) -> dict[str, list[str]]:
    """`delivered_states` of the requests the partner answered 200 (those it got while up)."""
    with switch.lock:
        down = {id(received) for received in switch.while_down}
        answered = [received for received in partner.requests if id(received) not in down]
    return delivered_states(answered)


def test_retry_after_holds_the_destination_to_within_a_second(celery_stack, operator_client, partner):
    # Given a partner answering its first request 503 Retry-After: 3, then 200
    partner.script = [Reply(status=503, headers=(("Retry-After", "3"),)), Reply()]
    destination = DestinationFactory(url=partner.url, max_wait_ms=0, max_retries=1, retry_delay_ms=0,
                                     circuit_breaker=False)
    map_segments(destination, SEGMENT)

    # When a device qualifies, and another right after the 503
    ingest(operator_client, [qualify("held-1")])
    partner.wait_for_requests(1, timeout_s=10)
    ingest(operator_client, [qualify("held-2")])
    received = partner.wait_for_requests(3, timeout_s=10)

    # Then the retry and the next request waited for the hold: 3 s, to within a second
    first = received[0].at
    assert all(3.0 <= later.at - first < 4.0 for later in received[1:3])
    destination.refresh_from_db()
    assert destination.hold_until is not None and destination.hold_until <= timezone.now()
