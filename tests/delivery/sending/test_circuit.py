"""The circuit breaker (CONTRACT §7): threshold, nothing sent while open, probes, closing, what is kept."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from delivery import tasks
from delivery.leases import lease_until
from delivery.models import Delivery, DeliveryStatus, DestinationDevice, Membership
from delivery.realtime.flush import send_one_delivery
from delivery.realtime.probing import run_probe
from delivery.sending import circuit, redelivering, rounds
from destinations.models import ChangeSource, CircuitState
from tests.delivery.pending_work import SPORTS, pending_device
from tests.delivery.sending.circuit_work import (
    backlog,
    circuit_changes,
    failing_destination,
    flush,
    pending_uuids,
    sent_devices,
)
from tests.local_partner import Reply

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_redis")]

T0 = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
DOWN = Reply(status=503, body=b"down")


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    """The deliveries whose sending task was queued; the probes queued by the tick are recorded too."""
    ids: list[int] = []
    monkeypatch.setattr(tasks.send_delivery_task, "delay", ids.append)
    monkeypatch.setattr(tasks.probe_circuit, "apply_async", lambda args, **_: ids.append(-args[0]))
    return ids


def run_queued(queued: list[int]) -> None:
    while queued:
        item = queued.pop(0)
        if item < 0:
            run_probe(destination_id=-item)
        else:
            send_one_delivery(delivery_id=item)


def test_the_threshold_of_consecutive_failed_attempts_opens_the_circuit_once(partner):
    # Given a partner that is down, and a destination opening after 3 failed attempts
    partner.script = [DOWN]
    destination = failing_destination(partner)
    with time_machine.travel(T0, tick=False):
        backlog(destination, 5, since=T0 - dt.timedelta(seconds=5))

        # When a flush sends its due requests (one claim of 5 requests, all failing)
        flush(destination)

    # Then the circuit is open, its first probe 30 s away, and the change log says so once
    destination.refresh_from_db()
    assert destination.circuit_state == CircuitState.OPEN
    assert destination.circuit_opened_at == T0
    assert destination.circuit_next_probe_at == T0 + dt.timedelta(seconds=30)
    assert destination.circuit_probe_interval_s == 30
    assert destination.consecutive_failures == 5
    [opened] = circuit_changes(destination)
    assert (opened.action, opened.source, opened.actor_name) == ("circuit_opened", "system", "aamdest")
    assert opened.changes["circuit_state"] == {"old": "closed", "new": "open"}
    assert "threshold 3" in opened.changes["detail"] and "503" in opened.changes["detail"]


def test_below_the_threshold_a_success_resets_the_count(partner):
    partner.script = [DOWN, DOWN, Reply()]
    destination = failing_destination(partner, circuit_failure_threshold=3)
    backlog(destination, 1, since=T0, prefix="a")
    flush(destination)
    backlog(destination, 1, since=T0, prefix="b")
    flush(destination)
    destination.refresh_from_db()
    assert (destination.consecutive_failures, destination.circuit_state) == (2, CircuitState.CLOSED)

    backlog(destination, 1, since=T0, prefix="c")
    flush(destination)
    destination.refresh_from_db()
    assert (destination.consecutive_failures, destination.circuit_state) == (0, CircuitState.CLOSED)


def test_while_open_nothing_is_sent_and_the_backlog_accumulates(partner, queued):
    # Given an open circuit
    partner.script = [DOWN]
    destination = failing_destination(partner)
    backlog(destination, 3, since=T0, prefix="first")
    flush(destination)
    assert len(partner.requests) == 3

    # When more devices become pending, flushes and the tick run, and a redelivery is asked for
    later = backlog(destination, 4, since=timezone.now(), prefix="later")
    assert flush(destination) == 0
    tasks.tick()
    failed = Delivery.objects.filter(destination=destination, status=DeliveryStatus.FAILED).first()
    redelivery = redelivering.create_redelivery(delivery=failed)
    send_one_delivery(delivery_id=redelivery.pk)
    run_queued(queued)

    # Then nothing more reached the partner: the backlog waits, the redelivery is parked (not failed)
    assert len(partner.requests) == 3
    assert set(later) <= pending_uuids(destination)
    redelivery.refresh_from_db()
    assert (redelivery.status, redelivery.lease_until) == (DeliveryStatus.PENDING, None)


def test_the_devices_of_the_deliveries_that_opened_it_are_pending_again_with_their_left_segments(partner):
    # Given a device told it left SPORTS and another active in it, in requests that fail and open the circuit
    partner.script = [DOWN]
    destination = failing_destination(partner, circuit_failure_threshold=2)
    pending_device(destination, "leaver", pending_since=T0, left=(SPORTS,))
    pending_device(destination, "stayer", pending_since=T0 + dt.timedelta(seconds=1), active=(SPORTS,))
    flush(destination)

    # Then both failed deliveries ended failed, as always, and their devices are pending again, in order,
    # the leaver still owing its "0"
    destination.refresh_from_db()
    assert destination.circuit_state == CircuitState.OPEN
    statuses = Delivery.objects.filter(destination=destination).values_list("status", flat=True)
    assert set(statuses) == {"failed"}
    rows = {row.device_id: row for row in DestinationDevice.objects.filter(destination=destination)}
    assert rows["leaver"].pending_since is not None and rows["leaver"].left_segment_ids == [SPORTS]
    assert rows["stayer"].pending_since is not None and rows["stayer"].in_flight_delivery_id is None
    assert rows["leaver"].pending_since <= rows["stayer"].pending_since


def test_a_probe_answered_200_closes_the_circuit_and_the_backlog_drains_oldest_first_with_the_latest_state(
    partner,
):
    # Given an outage that opened the circuit, then devices that changed while it was open
    partner.script = [DOWN]
    destination = failing_destination(partner, max_users_per_request=10, circuit_failure_threshold=1)
    with time_machine.travel(T0, tick=False) as clock:
        opening = backlog(destination, 3, since=T0 - dt.timedelta(minutes=1), prefix="opening")
        flush(destination)
        destination.refresh_from_db()
        assert destination.circuit_state == CircuitState.OPEN
        clock.move_to(T0 + dt.timedelta(seconds=10))
        during = backlog(destination, 4, since=timezone.now(), prefix="during")
        # One of the opening devices leaves SPORTS during the outage: its latest state is "0"
        Membership.objects.filter(device_id=opening[0], segment_id=SPORTS).update(is_active=False)
        DestinationDevice.objects.filter(device_id=opening[0]).update(left_segment_ids=[SPORTS])

        # When the partner is back and the probe comes
        partner.requests.clear()
        partner.script = [Reply()]
        clock.move_to(T0 + dt.timedelta(seconds=30))
        assert run_probe(destination_id=destination.pk) is True
        flush(destination)

    # Then the circuit is closed and recorded so; every device went out once, oldest first, latest state
    destination.refresh_from_db()
    assert (destination.circuit_state, destination.consecutive_failures) == (CircuitState.CLOSED, 0)
    assert destination.circuit_next_probe_at is None
    opened, closed = circuit_changes(destination)
    assert (closed.source, closed.actor_name) == ("system", "aamdest")
    assert "answered 200" in closed.changes["detail"]
    sent = sent_devices(partner)
    assert [uuid for uuid, _ in sent] == [*opening, *during]
    assert sent[0] == (opening[0], [(str(SPORTS), "0")])
    assert all(segments == [(str(SPORTS), "1")] for _, segments in sent[1:])
    assert pending_uuids(destination) == set()


def test_a_retry_waiting_when_the_circuit_opens_waits_for_the_close_then_goes_out(partner, queued):
    # Given a delivery whose first attempt fails and opens the circuit (threshold 1), one retry allowed
    partner.script = [DOWN]
    destination = failing_destination(partner, circuit_failure_threshold=1, max_retries=1, retry_delay_ms=10)
    delivery = Delivery.objects.create(
        destination=destination, kind="realtime", body=b"{}", user_count=0,
        lease_until=lease_until(destination=destination, now=timezone.now()),
    )
    rounds.send_deliveries(destination=destination, deliveries=[delivery])

    # Then its retry waits, parked, neither failed nor sent
    delivery.refresh_from_db()
    assert (delivery.status, delivery.lease_until) == (DeliveryStatus.PENDING, None)
    assert len(partner.requests) == 1
    tasks.tick()
    run_queued(queued)
    assert len(partner.requests) == 1

    # When the circuit closes (by hand), it goes out at the next tick as its second attempt
    partner.script = [Reply()]
    circuit.close_circuit(destination=destination, detail="test", source=ChangeSource.API)
    tasks.tick()
    run_queued(queued)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert list(delivery.attempts.values_list("number", flat=True)) == [1, 2]


def test_with_the_breaker_off_every_request_fails_after_its_retries_as_adobe_does(partner):
    partner.script = [DOWN]
    destination = failing_destination(partner, circuit_breaker=False, circuit_failure_threshold=1,
                                      max_retries=1, retry_delay_ms=0)
    backlog(destination, 4, since=T0)
    flush(destination)
    backlog(destination, 2, since=timezone.now(), prefix="later")
    flush(destination)

    destination.refresh_from_db()
    assert destination.circuit_state == CircuitState.CLOSED
    assert len(partner.requests) == 6 * 2  # each request and its retry
    assert Delivery.objects.filter(destination=destination, status=DeliveryStatus.FAILED).count() == 6
    assert pending_uuids(destination) == set()  # nothing kept back: failed, redeliverable, as before
    assert circuit_changes(destination) == []


def test_turning_the_breaker_off_closes_an_open_circuit(partner, queued):
    partner.script = [DOWN]
    destination = failing_destination(partner)
    backlog(destination, 3, since=T0)
    flush(destination)
    destination.circuit_breaker = False
    destination.save(update_fields=["circuit_breaker"])

    tasks.tick()

    destination.refresh_from_db()
    assert destination.circuit_state == CircuitState.CLOSED
    assert "turned off" in circuit_changes(destination)[-1].changes["detail"]
