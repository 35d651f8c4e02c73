"""`POST /api/v1/destinations/{id}/close-circuit/` (CONTRACT §5, §7): operators close a circuit by hand."""

from __future__ import annotations

import pytest
from django.utils import timezone

from delivery.coordination import scheduling_client
from delivery.realtime.slots import ramp_allowance
from destinations.models import ChangeAction, CircuitState, ConfigChange, Destination
from tests.factories import DestinationFactory

URL = "/api/v1/destinations/"

pytestmark = pytest.mark.django_db


def open_destination() -> Destination:
    now = timezone.now()
    return DestinationFactory(
        circuit_state=CircuitState.OPEN, circuit_opened_at=now, circuit_next_probe_at=now,
        circuit_probe_interval_s=120, consecutive_failures=14,
    )


def close(client, destination):
    return client.post(f"{URL}{destination.pk}/close-circuit/", format="json")


def test_an_operator_closes_an_open_circuit_and_the_change_log_names_them(operator_client):
    destination = open_destination()
    scheduling_client().flushdb()

    response = close(operator_client, destination)

    assert response.status_code == 200, response.json()
    assert response.json()["id"] == destination.pk
    destination.refresh_from_db()
    assert destination.circuit_state == CircuitState.CLOSED
    assert (destination.circuit_opened_at, destination.circuit_next_probe_at) == (None, None)
    assert (destination.circuit_probe_interval_s, destination.consecutive_failures) == (0, 0)
    [change] = ConfigChange.objects.filter(destination=destination, action=ChangeAction.CIRCUIT_CLOSED)
    assert (change.source, change.actor_name) == ("api", "operator")
    assert change.changes["circuit_state"] == {"old": "open", "new": "closed"}
    # The backlog drains with the ramp: one request at first
    assert ramp_allowance(destination_id=destination.pk) == 1


def test_closing_a_closed_circuit_is_a_409_with_a_message(operator_client):
    destination = DestinationFactory()

    response = close(operator_client, destination)

    assert response.status_code == 409
    assert "closed already" in response.json()["detail"]
    closes = ConfigChange.objects.filter(destination=destination, action=ChangeAction.CIRCUIT_CLOSED)
    assert not closes.exists()


def test_closing_needs_a_token_and_the_operator_role(client, viewer_client):
    destination = open_destination()

    assert close(client, destination).status_code == 401
    assert close(viewer_client, destination).status_code == 403
    destination.refresh_from_db()
    assert destination.circuit_state == CircuitState.OPEN


def test_the_circuit_settings_are_written_and_checked_through_the_api(operator_client):
    destination = DestinationFactory()
    url = f"{URL}{destination.pk}/"

    settings = {"circuit_breaker": False, "circuit_failure_threshold": 25}
    changed = operator_client.patch(url, settings, format="json")
    refused = operator_client.patch(url, {"circuit_failure_threshold": 0}, format="json")

    assert changed.status_code == 200, changed.json()
    assert (changed.json()["circuit_breaker"], changed.json()["circuit_failure_threshold"]) == (False, 25)
    assert refused.status_code == 400 and "circuit_failure_threshold" in refused.json()


def test_the_schema_documents_close_circuit():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/api/v1/destinations/{id}/close-circuit/"]["post"]
    assert {"200", "409"} <= set(operation["responses"])
