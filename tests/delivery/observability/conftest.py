"""Fixtures shared by the statistics and metrics tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from delivery.coordination import METRICS_KEYS, counters_client


@pytest.fixture
def clean_counters(settings) -> Iterator[redis.Redis]:
    """The Redis counters behind /metrics (`delivery.counters`), empty before and after the test."""
    client = counters_client()
    client.delete(*METRICS_KEYS)
    yield client
    client.delete(*METRICS_KEYS)
