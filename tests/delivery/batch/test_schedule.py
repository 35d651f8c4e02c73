"""Batch mode (CONTRACT §2): when batches fall due, send-now, paused destinations and beat's scheduler."""

from __future__ import annotations

import pytest

import delivery.tasks
from delivery.batch import transfers
from delivery.batch.transfers import (
    cut_batch,
    find_due_batch_destination_ids,
    find_unsent_batch_destination_ids,
    send_batch_deliveries,
)
from destinations.models import Destination
from tests.delivery.batch.batch_runs import T0, later, run_batch, users_of
from tests.delivery.lifecycle_events import apply, qualify
from tests.delivery.pending_work import SPORTS, map_segments
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db


# ---- schedule and tasks ---------------------------------------------------------------------


def test_batches_fall_due_on_their_interval_for_enabled_batch_destinations(batch_destination, clock):
    # Given a batch destination, a paused one and a real-time-only one, none batched yet
    paused = DestinationFactory(batch_interval_hours=48, enabled=False)
    DestinationFactory(batch_interval_hours=None)

    # When a batch runs at T0
    first_due = find_due_batch_destination_ids(now=T0)
    cut_batch(destination_id=batch_destination.pk, now=T0, only_if_due=True)
    again = cut_batch(destination_id=batch_destination.pk, now=later(hours=23), only_if_due=True)

    # Then only the enabled batch destination was due, and is again 24 hours later
    assert first_due == {batch_destination.pk}
    assert again.skipped == "not due"
    assert find_due_batch_destination_ids(now=later(hours=24)) == {batch_destination.pk}
    assert paused.pk not in find_due_batch_destination_ids(now=later(days=9))


def test_send_batch_now_cuts_and_sends_whatever_the_schedule(partner, batch_destination, clock):
    # Given a batch sent an hour ago, and a change since
    apply(qualify("a", SPORTS, at=T0))
    run_batch(batch_destination)
    clock.move_to(later(hours=1))
    apply(qualify("b", SPORTS, at=later(hours=1)))

    # When the operator sends the batch now (the task the API and console queue)
    delivery.tasks.send_batch_now(batch_destination.pk)

    # Then b went out at once, and nothing is left unsent
    assert [user[0] for user in users_of(partner, 1)] == ["b"]
    assert find_unsent_batch_destination_ids() == set()


def test_stored_batch_deliveries_wait_for_a_paused_destination(partner, batch_destination, clock):
    # Given a batch cut, then the destination paused before it was sent
    apply(qualify("a", SPORTS, at=T0))
    cut_batch(destination_id=batch_destination.pk, now=T0, only_if_due=False)
    Destination.objects.filter(pk=batch_destination.pk).update(enabled=False)
    batch_destination.refresh_from_db()

    # When the drain runs while paused, then after resuming
    while_paused = send_batch_deliveries(destination=batch_destination)
    unsent_while_paused = find_unsent_batch_destination_ids()
    Destination.objects.filter(pk=batch_destination.pk).update(enabled=True)
    delivery.tasks.send_stored_batch(batch_destination.pk)

    # Then it went out only after
    assert (while_paused, unsent_while_paused) == (0, set())
    assert [user[0] for user in users_of(partner)] == ["a"]


def test_the_scheduler_starts_due_batches_and_sends_stored_ones_left_unsent(
    batch_destination, clock, monkeypatch
):
    # Given a due destination, and another not due whose stored batch nobody is sending
    left_over = DestinationFactory(realtime=False, batch_interval_hours=24, last_batch_at=T0)
    map_segments(left_over, SPORTS)
    apply(qualify("a", SPORTS, at=T0))
    cut_batch(destination_id=left_over.pk, now=T0, only_if_due=False)
    queued: list[tuple[str, tuple, dict]] = []
    for task in (delivery.tasks.send_due_batch, delivery.tasks.send_stored_batch):
        monkeypatch.setattr(task, "apply_async",
                            lambda args, name=task.name, **options: queued.append((name, args, options)))

    # When beat's check runs
    delivery.tasks.start_due_batches()

    # Then each is queued once, to be dropped if not started before the next check
    assert queued == [
        ("delivery.tasks.send_due_batch", (batch_destination.pk,), {"expires": 50}),
        ("delivery.tasks.send_stored_batch", (left_over.pk,), {"expires": 50}),
    ]


def test_a_drain_that_loses_its_slot_stops_after_its_round(partner, batch_destination, clock, monkeypatch):
    # Given a batch of two requests, sent one a round
    monkeypatch.setattr(transfers, "MAX_ROUND_REQUESTS", 1)
    apply(*(qualify(device, SPORTS, at=T0) for device in ("a", "b", "c", "d")))
    cut_batch(destination_id=batch_destination.pk, now=T0, only_if_due=False)
    batch_destination.refresh_from_db()

    # When the drain's slot is lost after its first round
    sent = send_batch_deliveries(destination=batch_destination, keep_slot=lambda: False)

    # Then the other request waits, unleased, for the next drain
    assert (sent, len(partner.requests)) == (1, 1)
    assert find_unsent_batch_destination_ids() == {batch_destination.pk}
