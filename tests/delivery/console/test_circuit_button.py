"""The console's Close circuit button (CONTRACT §7): operators only, shown while the circuit is not closed."""

from __future__ import annotations

import pytest
from django.utils import timezone

from destinations.models import ChangeAction, CircuitState, ConfigChange
from tests.delivery.console.console_clients import messages_of
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db

BUTTON = b"Close circuit</button>"


def test_an_operator_sees_the_button_while_the_circuit_is_open_and_closes_it(operator):
    destination = DestinationFactory(circuit_state=CircuitState.OPEN, circuit_opened_at=timezone.now())
    page = operator.get(f"/dashboard/destinations/{destination.pk}/")
    assert BUTTON in page.content

    response = operator.post(f"/dashboard/destinations/{destination.pk}/close-circuit/", follow=True)

    destination.refresh_from_db()
    assert destination.circuit_state == CircuitState.CLOSED
    assert "closed" in messages_of(response)[0]
    assert BUTTON not in response.content
    change = ConfigChange.objects.get(destination=destination, action=ChangeAction.CIRCUIT_CLOSED)
    assert (change.source, change.actor_name) == ("console", "operator")


def test_the_button_is_hidden_while_the_circuit_is_closed(operator):
    destination = DestinationFactory()
    assert BUTTON not in operator.get(f"/dashboard/destinations/{destination.pk}/").content
    response = operator.post(f"/dashboard/destinations/{destination.pk}/close-circuit/", follow=True)
    assert "closed already" in messages_of(response)[0]


def test_a_viewer_neither_sees_nor_uses_the_button(viewer):
    destination = DestinationFactory(circuit_state=CircuitState.HALF_OPEN, circuit_opened_at=timezone.now())
    assert BUTTON not in viewer.get(f"/dashboard/destinations/{destination.pk}/").content

    response = viewer.post(f"/dashboard/destinations/{destination.pk}/close-circuit/")

    assert response.status_code == 403
    destination.refresh_from_db()
    assert destination.circuit_state == CircuitState.HALF_OPEN
