"""The destination admin's circuit breaker fieldset: settings editable, state read-only (CONTRACT §7)."""

from __future__ import annotations

import datetime as dt

import pytest

from destinations.models import CircuitState, Destination
from tests.destinations.admin_forms import change_url, form_data
from tests.factories import DestinationFactory

OPENED = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def open_destination(db, settings) -> Destination:
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = True  # the form re-checks the URL; no DNS here
    return DestinationFactory(
        url="https://127.0.0.1/aam", circuit_state=CircuitState.OPEN, circuit_opened_at=OPENED,
        circuit_next_probe_at=OPENED + dt.timedelta(seconds=30), consecutive_failures=10,
    )


def test_the_change_page_shows_the_circuit_state_read_only(admin_client, open_destination):
    html = admin_client.get(change_url(Destination, open_destination.pk)).content.decode()

    assert 'class="fieldset-heading">Circuit breaker</h2>' in html
    assert 'name="circuit_failure_threshold"' in html and 'name="circuit_breaker"' in html
    for name in ("circuit_state", "circuit_opened_at", "circuit_next_probe_at", "consecutive_failures"):
        assert f'name="{name}"' not in html  # shown, never an input
        assert f"field-{name}" in html
    assert "Probing" not in html and ">Open<" in html


def test_posting_the_form_changes_the_settings_but_never_the_state(admin_client, open_destination):
    response = admin_client.post(change_url(Destination, open_destination.pk), form_data(
        open_destination, circuit_failure_threshold=3, circuit_state="closed", consecutive_failures=0,
    ))

    assert response.status_code == 302, response.context["adminform"].form.errors
    open_destination.refresh_from_db()
    assert open_destination.circuit_failure_threshold == 3
    assert (open_destination.circuit_state, open_destination.consecutive_failures) == ("open", 10)


@pytest.mark.parametrize("threshold", [0, 1001])
def test_the_form_refuses_a_threshold_out_of_range(admin_client, open_destination, threshold):
    response = admin_client.post(change_url(Destination, open_destination.pk),
                                 form_data(open_destination, circuit_failure_threshold=threshold))

    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["circuit_failure_threshold"]
