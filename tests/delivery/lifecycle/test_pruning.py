"""delivery.lifecycle.pruning: delivery records are kept AAMDEST_DELIVERY_LOG_DAYS days (CONTRACT §5)."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

import delivery.tasks
from delivery.lifecycle.pruning import prune_delivery_log
from delivery.models import Attempt, Delivery, DeliveryDevice, DeliveryStatus
from tests.delivery.log_rows import TIMEOUT, log_delivery
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC)


def days_ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


def test_ended_deliveries_older_than_the_horizon_go_with_their_attempts_and_devices():
    # Given deliveries of 31 and 29 days ago, and a still pending one of 40 days ago
    destination = DestinationFactory()
    old = log_delivery(destination, created_at=days_ago(31), tries=[TIMEOUT, TIMEOUT], outcome="failed")
    recent = log_delivery(destination, created_at=days_ago(29))
    stuck = log_delivery(destination, created_at=days_ago(40), outcome=DeliveryStatus.PENDING, tries=[])

    # When the log is pruned to 30 days
    pruned = prune_delivery_log(now=NOW, days=30)

    # Then only the ended old one and its rows are gone
    assert pruned == 1
    assert set(Delivery.objects.values_list("pk", flat=True)) == {recent.pk, stuck.pk}
    assert not Attempt.objects.filter(delivery_id=old.pk).exists()
    assert not DeliveryDevice.objects.filter(delivery_id=old.pk).exists()


def test_a_redelivery_outlives_its_pruned_original():
    destination = DestinationFactory()
    original = log_delivery(destination, created_at=days_ago(45))
    redelivery = log_delivery(destination, created_at=days_ago(2), kind="redelivery", redelivery_of=original)

    prune_delivery_log(now=NOW, days=30)

    redelivery.refresh_from_db()
    assert redelivery.redelivery_of_id is None
    assert bytes(redelivery.body)


def test_pruning_works_in_chunks_and_never_reads_the_documents():
    destination = DestinationFactory()
    for day in range(5):
        log_delivery(destination, created_at=days_ago(60 + day))

    with CaptureQueriesContext(connection) as queries:
        pruned = prune_delivery_log(now=NOW, days=30, chunk_size=2)

    assert pruned == 5
    assert not Delivery.objects.exists()
    assert not any('"body"' in query["sql"] for query in queries.captured_queries)


def test_the_scheduled_task_uses_the_configured_retention(settings):
    settings.AAMDEST_DELIVERY_LOG_DAYS = 7
    destination = DestinationFactory()
    log_delivery(destination, created_at=days_ago(8))
    kept = log_delivery(destination, created_at=days_ago(6))

    with time_machine.travel(NOW, tick=False):
        delivery.tasks.prune_deliveries()

    assert list(Delivery.objects.values_list("pk", flat=True)) == [kept.pk]
