"""The circuit's probes (CONTRACT §7): their schedule, a failed probe, the test document, a dead prober."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from delivery.models import Delivery, DeliveryKind, DeliveryStatus, DestinationDevice
from delivery.realtime.probing import run_probe
from delivery.sending import circuit
from destinations.models import CircuitState
from tests.delivery.sending.circuit_work import (
    backlog,
    circuit_changes,
    failing_destination,
    flush,
    pending_uuids,
)
from tests.local_partner import Reply

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_redis")]

T0 = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
DOWN = Reply(status=503, body=b"down")

def test_probes_come_30_s_after_opening_then_at_doubling_intervals_up_to_15_minutes(partner):
    partner.script = [DOWN]
    destination = failing_destination(partner)
    with time_machine.travel(T0, tick=False) as clock:
        backlog(destination, 3, since=T0)
        flush(destination)
        moments = []
        for _ in range(7):
            destination.refresh_from_db()
            # A moment before the probe is due, nothing is probed
            clock.move_to(destination.circuit_next_probe_at - dt.timedelta(seconds=1))
            assert run_probe(destination_id=destination.pk) is None
            clock.move_to(destination.circuit_next_probe_at)
            moments.append(int((timezone.now() - T0).total_seconds()))
            assert run_probe(destination_id=destination.pk) is False

    # Then the probes came at +30 s, then 60, 120, 240, 480, 900 and 900 s after each other
    assert moments == [30, 90, 210, 450, 930, 1830, 2730]
    assert len(partner.requests) == 3 + 7  # one attempt a probe
    destination.refresh_from_db()
    assert destination.circuit_state == CircuitState.OPEN
    assert destination.circuit_probe_interval_s == 900
    assert len(circuit_changes(destination)) == 1  # probing is no transition: one "opened" only


def test_a_failed_probe_reopens_the_circuit_and_keeps_the_probed_devices(partner):
    partner.script = [DOWN]
    destination = failing_destination(partner)
    with time_machine.travel(T0, tick=False) as clock:
        backlog(destination, 3, since=T0)
        flush(destination)
        clock.move_to(T0 + dt.timedelta(seconds=30))
        assert run_probe(destination_id=destination.pk) is False

    destination.refresh_from_db()
    assert destination.circuit_state == CircuitState.OPEN
    assert destination.circuit_next_probe_at == T0 + dt.timedelta(seconds=90)
    probed = Delivery.objects.filter(destination=destination).order_by("-pk").first()
    assert probed.status == DeliveryStatus.FAILED
    assert set(probed.devices.values_list("aam_uuid", flat=True)) <= pending_uuids(destination)


def test_with_nothing_pending_the_probe_is_the_test_document(partner):
    partner.script = [DOWN]
    destination = failing_destination(partner, circuit_failure_threshold=1)
    with time_machine.travel(T0, tick=False) as clock:
        backlog(destination, 1, since=T0)
        flush(destination)
        DestinationDevice.objects.filter(destination=destination).update(pending_since=None)
        partner.script = [Reply()]
        clock.move_to(T0 + dt.timedelta(seconds=30))
        assert run_probe(destination_id=destination.pk) is True
    assert Delivery.objects.filter(destination=destination, kind=DeliveryKind.TEST).count() == 1


def test_a_prober_that_died_leaves_a_half_open_circuit_that_is_taken_over_after_its_deadline(partner):
    partner.script = [DOWN]
    destination = failing_destination(partner, timeout_ms=1000)
    with time_machine.travel(T0, tick=False) as clock:
        backlog(destination, 3, since=T0)
        flush(destination)
        clock.move_to(T0 + dt.timedelta(seconds=30))
        # A worker wins the probe, then dies before sending it
        assert circuit.take_probe(destination_id=destination.pk, now=timezone.now()) is not None
        destination.refresh_from_db()
        assert destination.circuit_state == CircuitState.HALF_OPEN
        assert run_probe(destination_id=destination.pk) is None  # nobody else probes meanwhile

        # Its deadline (timeout + 30 s) passed: the next probe takes over
        clock.move_to(T0 + dt.timedelta(seconds=30 + 1 + 30))
        partner.script = [Reply()]
        assert run_probe(destination_id=destination.pk) is True
