"""delivery.observability.stats: hourly buckets, success rate, latency percentiles, failures, backlog."""

from __future__ import annotations

import datetime as dt

import pytest

from delivery import dialect
from delivery.models import DeliveryStatus, DestinationDevice, Device
from delivery.observability import stats
from tests.delivery.log_rows import OK, TIMEOUT, TOKEN_FAILED, Try, log_delivery, status
from tests.factories import DestinationFactory

NOW = dt.datetime(2024, 5, 6, 14, 35, tzinfo=dt.UTC)
pytestmark = pytest.mark.django_db


def test_it_counts_requests_per_hour_and_the_users_of_the_delivered_ones():
    # Given two delivered requests and a failed one last hour, a pending one now, one before the window
    destination = DestinationFactory()
    last_hour = NOW - dt.timedelta(hours=1)
    log_delivery(destination, created_at=last_hour, aam_uuids=["a", "b", "c"])
    log_delivery(destination, created_at=last_hour + dt.timedelta(minutes=20), aam_uuids=["d", "e"])
    log_delivery(destination, created_at=last_hour, outcome=DeliveryStatus.FAILED, tries=[TIMEOUT, TIMEOUT])
    log_delivery(destination, created_at=NOW, outcome=DeliveryStatus.PENDING, tries=[])
    log_delivery(destination, created_at=NOW - dt.timedelta(hours=7))

    # When
    buckets = stats.request_buckets(destination_ids=[destination.id], hours=6, now=NOW)[destination.id]

    # Then there are six hourly buckets ending with the current hour, empty hours included
    assert [bucket.start for bucket in buckets] == [
        dt.datetime(2024, 5, 6, hour, tzinfo=dt.UTC) for hour in range(9, 15)
    ]
    assert (buckets[-2].delivered, buckets[-2].failed, buckets[-2].users_delivered) == (2, 1, 5)
    assert (buckets[-1].pending, buckets[-1].requests) == (1, 1)
    assert sum(bucket.requests for bucket in buckets) == 4


def test_the_success_rate_counts_finished_requests_only():
    # Given three delivered, one failed and one pending request
    destination = DestinationFactory()
    for _ in range(3):
        log_delivery(destination, created_at=NOW)
    log_delivery(destination, created_at=NOW, outcome=DeliveryStatus.FAILED, tries=[status(500)])
    log_delivery(destination, created_at=NOW, outcome=DeliveryStatus.PENDING, tries=[])

    # When
    summary = stats.destination_stats(destination_ids=[destination.id], hours=24, now=NOW)[destination.id]

    # Then
    assert summary.success_rate == pytest.approx(0.75)
    assert summary.requests == 5


def test_the_success_rate_is_unknown_without_finished_requests():
    destination = DestinationFactory()

    summary = stats.destination_stats(destination_ids=[destination.id], hours=24, now=NOW)[destination.id]

    assert summary.success_rate is None
    assert summary.latency == stats.Latency()


def test_latency_percentiles_interpolate_like_percentile_cont_in_the_database_and_in_python():
    # Given ten attempts of 100, 200 … 1000 ms, and one older than the window
    destination = DestinationFactory()
    for duration in range(100, 1001, 100):
        log_delivery(destination, created_at=NOW, tries=[Try(duration_ms=duration)])
    log_delivery(destination, created_at=NOW - dt.timedelta(days=2), tries=[Try(duration_ms=9000)])
    since = stats.window_start(hours=24, now=NOW)

    # When the database computes them, and when Python does (SQLite's way)
    latency = stats.attempt_latency(destination_ids=[destination.id], since=since)[destination.id]
    in_python = dialect.percentiles_in_python(((destination.id, d) for d in range(1000, 99, -100)),
                                              fractions=stats.LATENCY_FRACTIONS)[destination.id]

    # Then both agree with linear interpolation between the nearest values
    assert latency.count == in_python[0] == 10
    for computed in ((latency.p50, latency.p95, latency.p99), tuple(in_python[1])):
        assert computed == pytest.approx((550, 955, 991))


def test_a_percentile_of_nothing_is_none_and_of_one_value_is_that_value():
    assert dialect.percentile(values=[], fraction=0.5) is None
    assert dialect.percentile(values=[42.0], fraction=0.99) == 42.0


def test_failed_attempts_are_counted_by_reason_and_by_status_code():
    # Given timeouts, two kinds of non-200 answers, a token failure and successes
    destination = DestinationFactory()
    log_delivery(destination, created_at=NOW, outcome=DeliveryStatus.FAILED, tries=[TIMEOUT, status(503)])
    log_delivery(destination, created_at=NOW, outcome=DeliveryStatus.FAILED, tries=[status(503), status(503)])
    log_delivery(destination, created_at=NOW, tries=[TOKEN_FAILED, OK])
    log_delivery(destination, created_at=NOW, tries=[status(204), OK])

    # When
    failures = stats.failure_reasons(destination_ids=[destination.id], since=NOW - dt.timedelta(hours=1))

    # Then most frequent first, a non-200 named by its code
    assert failures[destination.id] == [("HTTP 503", 3), ("HTTP 204", 1), ("timeout", 1), ("token", 1)]


def test_the_backlog_counts_pending_devices_and_finds_the_oldest():
    # Given two pending devices of one destination and one already sent
    destination, other = DestinationFactory(), DestinationFactory()
    for index, minutes in enumerate((5, 30, None)):
        device = Device.objects.create(aam_uuid=f"device-{index}", last_seen=NOW)
        DestinationDevice.objects.create(
            destination=destination, device=device,
            pending_since=None if minutes is None else NOW - dt.timedelta(minutes=minutes),
        )

    # When
    backlog = stats.pending_backlog(destination_ids=[destination.id, other.id])

    # Then
    assert backlog[destination.id] == stats.Backlog(devices=2, oldest_since=NOW - dt.timedelta(minutes=30))
    assert other.id not in backlog
