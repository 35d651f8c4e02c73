"""The breaker's own transitions raise the alerts (CONTRACT §7): one opened, one closed, none for probing.

The other alert tests write the change-log rows as the breaker does (`conftest.transition`);
these let the breaker write them: a failing flush opens the circuit, probes fail and
succeed, an operator closes it through the API.
"""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from delivery.alert_models import Alert, AlertEvent
from delivery.alerts.job import run_alerts
from delivery.realtime.probing import run_probe
from destinations.models import CircuitState, Destination
from tests.delivery.sending import circuit_work
from tests.local_partner import Partner, Reply

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_redis", "quiet_channels")]

T0 = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
DOWN = Reply(status=503, body=b"down")


def events() -> list[tuple[str, str]]:
    return list(Alert.objects.order_by("id").values_list("event", "detail"))


def open_circuit(partner: Partner) -> Destination:
    """A destination whose circuit a failing flush opened (threshold 3), at T0."""
    partner.script = [DOWN]
    destination = circuit_work.failing_destination(partner)
    circuit_work.backlog(destination, 3, since=T0)
    circuit_work.flush(destination)
    destination.refresh_from_db()
    assert destination.circuit_state == CircuitState.OPEN
    return destination


def test_an_opening_failed_probes_and_a_probe_closing_raise_one_alert_each_way(partner):
    with time_machine.travel(T0, tick=False) as clock:
        destination = open_circuit(partner)
        run_alerts()
        # Two failed probes, each followed by an alert run: probing is no transition
        for _ in range(2):
            destination.refresh_from_db()
            clock.move_to(destination.circuit_next_probe_at)
            assert run_probe(destination_id=destination.pk) is False
            run_alerts()
        # The partner is back: the next probe closes the circuit
        partner.script = [Reply()]
        destination.refresh_from_db()
        clock.move_to(destination.circuit_next_probe_at)
        assert run_probe(destination_id=destination.pk) is True
        run_alerts()
        run_alerts()

    assert [event for event, _ in events()] == [AlertEvent.CIRCUIT_OPENED, AlertEvent.CIRCUIT_CLOSED]
    opened, closed = (detail for _, detail in events())
    assert opened == ("3 consecutive failed attempts (threshold 3); last error: partner answered 503 "
                      "Service Unavailable")
    assert closed == "a probe was answered 200 after 210 s open"


def test_a_circuit_closed_through_the_api_raises_one_closed_alert_naming_the_operator(
    partner, operator_client
):
    with time_machine.travel(T0, tick=False):
        destination = open_circuit(partner)
        run_alerts()
        url = f"/api/v1/destinations/{destination.pk}/close-circuit/"
        response = operator_client.post(url)
        assert response.status_code == 200, response.json()
        # A second close is refused (409) and raises nothing
        assert operator_client.post(url).status_code == 409
        run_alerts()
        run_alerts()

    assert events()[1:] == [(AlertEvent.CIRCUIT_CLOSED, "closed by hand (by operator, through the api)")]
    assert [event for event, _ in events()] == [AlertEvent.CIRCUIT_OPENED, AlertEvent.CIRCUIT_CLOSED]
