"""Two workers never probe at once (CONTRACT §7): the open → half_open UPDATE has one winner."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection
from django.utils import timezone

from delivery.realtime.probing import run_probe
from destinations.models import CircuitState
from tests.delivery.sending.circuit_work import failing_destination
from tests.local_partner import Reply

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgresql_only,
              pytest.mark.usefixtures("empty_redis")]

RACERS = 6


def test_of_workers_racing_for_a_due_probe_exactly_one_probes(partner):
    # Given an open circuit whose probe is due, and a partner slow to answer it
    partner.script = [Reply(delay_s=0.3)]
    past = timezone.now() - dt.timedelta(seconds=1)
    destination = failing_destination(partner)
    type(destination).objects.filter(pk=destination.pk).update(
        circuit_state=CircuitState.OPEN, circuit_opened_at=past, circuit_next_probe_at=past,
        circuit_probe_interval_s=30,
    )
    start = threading.Barrier(RACERS)
    outcomes: list[bool | None] = []

    def race() -> None:
        try:
            start.wait(5)
            outcomes.append(run_probe(destination_id=destination.pk))
        finally:
            connection.close()

    # When workers on several connections race for it
    racers = [threading.Thread(target=race) for _ in range(RACERS)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(20)

    # Then one probed (and closed the circuit), the others found it taken; the partner got one request
    assert sorted(outcomes, key=str) == sorted([True] + [None] * (RACERS - 1), key=str)
    assert len(partner.requests) == 1
    destination.refresh_from_db()
    assert destination.circuit_state == CircuitState.CLOSED
