"""`aamdest_circuit_open{destination}` on /metrics (CONTRACT §7): 1 while open or probing."""

from __future__ import annotations

import pytest

from destinations.models import CircuitState
from tests.delivery.observability.test_metrics import _labels, _scrape
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db


def test_the_circuit_gauge_is_1_while_open_or_probing_and_0_when_closed(client, clean_counters):
    closed = DestinationFactory(name="closed")
    opened = DestinationFactory(name="open", circuit_state=CircuitState.OPEN)
    probing = DestinationFactory(name="probing", circuit_state=CircuitState.HALF_OPEN)

    samples = _scrape(client)

    assert samples[("aamdest_circuit_open", _labels(closed))] == 0
    assert samples[("aamdest_circuit_open", _labels(opened))] == 1
    assert samples[("aamdest_circuit_open", _labels(probing))] == 1
