"""delivery.counters: the Redis counters of ingested events and OAuth token fetches."""

from __future__ import annotations

import pytest

from delivery import counters
from delivery.coordination import EVENTS_INGESTED_KEY, TOKEN_FETCHES_KEY, counters_client


@pytest.fixture
def clean_counters(settings):
    client = counters_client()
    client.delete(EVENTS_INGESTED_KEY, TOKEN_FETCHES_KEY)
    yield client
    client.delete(EVENTS_INGESTED_KEY, TOKEN_FETCHES_KEY)


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


def test_counting_never_fails_when_redis_is_down(settings):
    # Given a Redis that does not answer
    settings.AAMDEST_REDIS_URL = "redis://127.0.0.1:1/0"

    # When counting, nothing is raised, and reading says it could not
    counters.count_events_ingested(1)
    counters.count_token_fetch(destination_id=1, outcome="ok")
    assert counters.read_counters() is None
