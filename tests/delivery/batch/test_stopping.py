"""Warm shutdown of batch tasks (CONTRACT §6): a cut in progress starts again elsewhere, a drain stops."""

from __future__ import annotations

import pytest
from django.utils import timezone

from delivery import shutdown, tasks
from delivery.batch import transfers
from delivery.models import Delivery
from destinations.models import Destination
from tests.delivery.batch.batch_runs import T0
from tests.delivery.lifecycle_events import apply, qualify
from tests.delivery.pending_work import SPORTS

pytestmark = pytest.mark.django_db


@pytest.fixture
def stopping():
    """This process is shutting down, as after the worker's SIGTERM."""
    shutdown.request_stop()
    yield
    shutdown.reset()


def test_a_cut_in_progress_is_abandoned_and_its_task_queued_again(
    partner, batch_destination: Destination, monkeypatch, stopping
):
    # Given a batch to cut
    apply(qualify("a", SPORTS, at=T0), qualify("b", SPORTS, at=T0))
    requeued: list[tuple] = []
    monkeypatch.setattr(tasks.send_due_batch, "apply_async", lambda args, **options: requeued.append(args))

    # When a stopping worker runs the scheduled batch
    tasks.send_due_batch(batch_destination.pk)

    # Then nothing was stored nor moved, and the task is queued for another worker
    assert not Delivery.objects.exists()
    batch_destination.refresh_from_db()
    assert batch_destination.batch_cutoff_seq is None and batch_destination.last_batch_at is None
    assert requeued == [(batch_destination.pk,)]
    assert partner.requests == []


def test_a_stopping_drain_claims_no_stored_batch_delivery(partner, batch_destination: Destination):
    apply(qualify("a", SPORTS, at=T0))
    transfers.cut_batch(destination_id=batch_destination.pk, now=timezone.now(), only_if_due=False)
    shutdown.request_stop()
    try:
        sent = transfers.send_batch_deliveries(destination=batch_destination)
    finally:
        shutdown.reset()

    assert sent == 0
    assert partner.requests == []
    assert Delivery.objects.get().lease_until is None  # unleased: the next drain takes it
