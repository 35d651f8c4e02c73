"""End to end: beat and two real workers send each circuit transition's alert to a local receiver (§7).

On RabbitMQ only: tests/e2e/test_circuit_breaker.py checks the alerts of a real outage on Redis.
"""

from __future__ import annotations

import json
import time

import pytest

from delivery.alert_models import Alert, AlertSend
from destinations.models import ChangeAction
from partner.verification import Signing
from tests.delivery.alerts.conftest import SIGNING_KEY, transition
from tests.factories import DestinationFactory
from tests.local_partner import Partner

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True),
              pytest.mark.parametrize("broker_url", ["rabbitmq"], indirect=True)]


@pytest.fixture
def alert_env(worker_env: dict[str, str], partner: Partner) -> Partner:
    """The workers' alert webhook: the local receiver, signed with SIGNING_KEY (set before they start)."""
    worker_env.update(AAMDEST_ALERT_WEBHOOK_URL=partner.url, AAMDEST_ALERT_SIGNING_KEY=SIGNING_KEY)
    return partner


def test_each_circuit_transition_reaches_the_webhook_once(alert_env, celery_stack):
    celery_stack.start_worker("second")
    destination = DestinationFactory(name="acme")
    signing = Signing(keys=(SIGNING_KEY,), algorithm="sha256", header="X-AAMDest-Signature")

    # When the circuit opens: one signed POST within beat's 5 s period (and a worker's pick-up)
    transition(destination, ChangeAction.CIRCUIT_OPENED)
    [opened] = alert_env.wait_for_requests(1, timeout_s=30)
    assert json.loads(opened.body)["event"] == "circuit_opened"
    assert signing.is_signed(headers=opened.headers, body=opened.body)

    # When it closes: one more
    transition(destination, ChangeAction.CIRCUIT_CLOSED, detail="probe answered 200")
    _, closed = alert_env.wait_for_requests(2, timeout_s=30)
    assert json.loads(closed.body) == {
        "event": "circuit_closed", "destination": {"id": destination.pk, "name": "acme"},
        "at": json.loads(closed.body)["at"], "detail": "probe answered 200",
    }

    # Then, a few more runs later, still exactly one POST per transition
    time.sleep(11)
    assert len(alert_env.requests) == 2
    assert Alert.objects.count() == 2
    assert list(AlertSend.objects.values_list("status", flat=True)) == ["sent", "sent"]
