"""delivery.counters: the Redis running totals behind /metrics."""

from __future__ import annotations

import pytest

from delivery import counters
from delivery.coordination import METRICS_KEYS, counters_client


@pytest.fixture
def clean_counters(settings):
    client = counters_client()
    client.delete(*METRICS_KEYS)
    yield client
    client.delete(*METRICS_KEYS)


def test_counters_add_up_across_calls_in_redis(clean_counters):
    # When ingestion and the OAuth client count
    counters.count_events_ingested(3)
    counters.count_events_ingested(0)
    counters.count_events_ingested(2)
    counters.count_token_fetch(destination_id=7, outcome="ok")
    counters.count_token_fetch(destination_id=7, outcome="ok")
    counters.count_token_fetch(destination_id=7, outcome="error")

    # Then
    assert counters.read_counters() == counters.Counters(
        events_ingested=5, token_fetches={(7, "ok"): 2, (7, "error"): 1}
    )


def test_attempts_and_ended_deliveries_add_up_per_destination_with_a_cumulative_histogram(clean_counters):
    # When two rounds of destination 7 and one of destination 8 are counted
    counters.count_attempts(destination_id=7, attempts=[("ok", 40), ("status", 50), ("timeout", 3000)])
    counters.count_attempts(destination_id=7, attempts=[("ok", 31_000)])
    counters.count_attempts(destination_id=8, attempts=[])
    counters.count_finished_deliveries(destination_id=7, outcomes=["delivered", "failed", "delivered"])

    # Then
    totals = counters.read_delivery_totals()
    assert totals.attempts == {(7, "ok"): 2, (7, "status"): 1, (7, "timeout"): 1}
    assert totals.finished == {(7, "delivered"): 2, (7, "failed"): 1}
    assert list(totals.latency) == [7]
    # Bounds 50, 100, 250, 500, 1000, 2000, 3000, 5000, 10000, 30000 ms; 31000 only under +Inf.
    assert totals.latency[7] == counters.Histogram(
        cumulative_counts=[2, 2, 2, 2, 2, 2, 3, 3, 3, 3], count=4, sum_ms=34_090
    )


def test_counting_never_fails_when_redis_is_down(settings):
    # Given a Redis that does not answer
    settings.AAMDEST_REDIS_URL = "redis://127.0.0.1:1/0"

    # When counting, nothing is raised, and reading says it could not
    counters.count_events_ingested(1)
    counters.count_token_fetch(destination_id=1, outcome="ok")
    counters.count_attempts(destination_id=1, attempts=[("ok", 10)])
    counters.count_finished_deliveries(destination_id=1, outcomes=["delivered"])
    assert counters.read_counters() is None
    assert counters.read_delivery_totals() is None
