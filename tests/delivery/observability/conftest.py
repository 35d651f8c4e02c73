"""Fixtures shared by the statistics and metrics tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from delivery.observability import stats


@pytest.fixture
def clean_counters(settings) -> Iterator[redis.Redis]:
    """The Redis counters of ingested events and token fetches, empty before and after the test."""
    client = stats._redis(settings.AAMDEST_REDIS_URL)
    client.delete(stats._EVENTS_KEY, stats._TOKEN_FETCHES_KEY)
    yield client
    client.delete(stats._EVENTS_KEY, stats._TOKEN_FETCHES_KEY)
