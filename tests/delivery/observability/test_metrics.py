"""GET /metrics: Prometheus text from the running totals in Redis and the in-flight gauges."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from delivery import counters
from delivery.models import Attempt, Delivery, DeliveryStatus, DestinationDevice, Device
from tests.delivery.log_rows import TIMEOUT, Try, status
from tests.delivery.observability.recording import record_delivery
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db


def _scrape(client) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _labels(destination, **extra: str) -> frozenset:
    labels = {"destination_id": str(destination.id), "destination": destination.name, **extra}
    return frozenset(labels.items())


def test_metrics_need_no_login_and_every_name_starts_with_aamdest(client, clean_counters):
    DestinationFactory()

    samples = _scrape(client)

    assert samples
    assert all(name.startswith("aamdest_") for name, _ in samples)


def _record_three_deliveries(acme) -> None:
    """A request delivered after a 503, a failed one, and a pending one, recorded as the sender does."""
    record_delivery(acme, tries=[status(503, duration_ms=40), Try(duration_ms=700)],
                    outcome=DeliveryStatus.DELIVERED)
    record_delivery(acme, tries=[TIMEOUT, TIMEOUT], outcome=DeliveryStatus.FAILED)
    record_delivery(acme, tries=[], outcome=DeliveryStatus.PENDING)


def test_deliveries_attempts_and_latency_are_counted_per_destination_and_outcome(
    client, clean_counters, django_capture_on_commit_callbacks
):
    # Given a request delivered after a 503, a failed one, and a pending one
    acme, quiet = DestinationFactory(name="acme"), DestinationFactory(name="quiet", enabled=False)
    with django_capture_on_commit_callbacks(execute=True):
        _record_three_deliveries(acme)

    # When
    samples = _scrape(client)

    # Then
    assert samples[("aamdest_deliveries_total", _labels(acme, outcome="delivered"))] == 1
    assert samples[("aamdest_deliveries_total", _labels(acme, outcome="failed"))] == 1
    assert samples[("aamdest_deliveries_total", _labels(quiet, outcome="failed"))] == 0
    assert samples[("aamdest_deliveries_pending", _labels(acme))] == 1
    assert samples[("aamdest_attempts_total", _labels(acme, outcome="ok"))] == 1
    assert samples[("aamdest_attempts_total", _labels(acme, outcome="status"))] == 1
    assert samples[("aamdest_attempts_total", _labels(acme, outcome="timeout"))] == 2
    assert samples[("aamdest_attempt_duration_seconds_bucket", _labels(acme, le="0.05"))] == 1
    assert samples[("aamdest_attempt_duration_seconds_bucket", _labels(acme, le="1.0"))] == 2
    assert samples[("aamdest_attempt_duration_seconds_bucket", _labels(acme, le="3.0"))] == 4
    assert samples[("aamdest_attempt_duration_seconds_bucket", _labels(acme, le="+Inf"))] == 4
    assert samples[("aamdest_attempt_duration_seconds_count", _labels(acme))] == 4
    assert samples[("aamdest_attempt_duration_seconds_sum", _labels(acme))] == pytest.approx(6.74)
    assert samples[("aamdest_destination_enabled", _labels(quiet))] == 0


def test_a_scrape_reads_no_row_of_the_delivery_log_and_totals_outlive_pruning(
    client, clean_counters, django_capture_on_commit_callbacks
):
    # Given recorded deliveries, whose log rows are then pruned
    acme = DestinationFactory(name="acme")
    with django_capture_on_commit_callbacks(execute=True):
        _record_three_deliveries(acme)
    Delivery.objects.exclude(status=DeliveryStatus.PENDING).delete()

    # When
    with CaptureQueriesContext(connection) as queries:
        samples = _scrape(client)

    # Then the attempts table is not read, deliveries only through the pending ones, and the totals stand
    statements = [query["sql"] for query in queries]
    assert not any(Attempt._meta.db_table in sql for sql in statements)
    assert all("pending" in sql for sql in statements if f'"{Delivery._meta.db_table}"' in sql)
    assert samples[("aamdest_deliveries_total", _labels(acme, outcome="delivered"))] == 1
    assert samples[("aamdest_attempts_total", _labels(acme, outcome="timeout"))] == 2
    assert samples[("aamdest_attempt_duration_seconds_count", _labels(acme))] == 4


def test_a_rolled_back_round_is_not_counted(client, clean_counters, django_capture_on_commit_callbacks):
    # Given a round whose transaction rolls back after its attempts were recorded
    acme = DestinationFactory(name="acme")
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        record_delivery(acme, tries=[Try(duration_ms=80)], outcome=DeliveryStatus.DELIVERED)
        raise RuntimeError("the round fails before it commits")

    # When
    samples = _scrape(client)

    # Then
    assert samples[("aamdest_deliveries_total", _labels(acme, outcome="delivered"))] == 0
    assert ("aamdest_attempts_total", _labels(acme, outcome="ok")) not in samples


def test_the_pending_backlog_is_a_count_and_the_oldest_age(client, clean_counters):
    destination = DestinationFactory()
    for index, minutes in enumerate((1, 10)):
        device = Device.objects.create(aam_uuid=f"d{index}", last_seen=timezone.now())
        DestinationDevice.objects.create(destination=destination, device=device,
                                         pending_since=timezone.now() - dt.timedelta(minutes=minutes))

    samples = _scrape(client)

    assert samples[("aamdest_pending_devices", _labels(destination))] == 2
    assert 600 <= samples[("aamdest_pending_oldest_age_seconds", _labels(destination))] < 660


def test_events_ingested_and_token_fetches_come_from_the_redis_counters(client, clean_counters):
    destination = DestinationFactory()
    counters.count_events_ingested(250)
    counters.count_token_fetch(destination_id=destination.id, outcome="ok")
    counters.count_token_fetch(destination_id=destination.id, outcome="error")
    counters.count_token_fetch(destination_id=destination.id, outcome="error")

    samples = _scrape(client)

    assert samples[("aamdest_metrics_redis_up", frozenset())] == 1
    assert samples[("aamdest_events_ingested_total", frozenset())] == 250
    assert samples[("aamdest_token_fetches_total", _labels(destination, outcome="ok"))] == 1
    assert samples[("aamdest_token_fetches_total", _labels(destination, outcome="error"))] == 2


def test_a_redis_outage_leaves_the_database_metrics_readable(client, settings):
    settings.AAMDEST_REDIS_URL = "redis://127.0.0.1:1/0"
    destination = DestinationFactory()

    samples = _scrape(client)

    assert samples[("aamdest_metrics_redis_up", frozenset())] == 0
    assert samples[("aamdest_pending_devices", _labels(destination))] == 0
    assert samples[("aamdest_deliveries_pending", _labels(destination))] == 0
    assert not any(name == "aamdest_events_ingested_total" for name, _ in samples)
    assert not any(name.startswith(("aamdest_deliveries_total", "aamdest_attempt")) for name, _ in samples)


def test_metrics_refuse_writes(client):
    assert client.post("/metrics").status_code == 405
