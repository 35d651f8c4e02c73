"""Fixtures shared by the statistics and metrics tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from delivery.coordination import EVENTS_INGESTED_KEY, TOKEN_FETCHES_KEY, counters_client


@pytest.fixture
def clean_counters(settings) -> Iterator[redis.Redis]:
    """The Redis counters of ingested events and token fetches, empty before and after the test."""
    client = counters_client()
    client.delete(EVENTS_INGESTED_KEY, TOKEN_FETCHES_KEY)
    yield client
    client.delete(EVENTS_INGESTED_KEY, TOKEN_FETCHES_KEY)
