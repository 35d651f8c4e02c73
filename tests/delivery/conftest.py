"""Fixtures shared by the delivery tests: a frozen clock, a destination at the local partner, wake-ups."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import time_machine
from django.utils import timezone

import delivery.tasks
from delivery.coordination import scheduling_client
from destinations.models import Destination
from tests.delivery.pending_work import NEWS, OLD, SPORTS, map_segments
from tests.factories import DestinationFactory
from tests.local_partner import Partner


@pytest.fixture
def now() -> dt.datetime:
    return timezone.now()


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> Iterator[time_machine.Traveller]:
    """Time frozen (not ticking) at the test module's `T0`; `clock.move_to(...)` moves it."""
    with time_machine.travel(request.module.T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
def destination(partner: Partner) -> Destination:
    """A real-time destination at the local partner, sending at once, mapped to SPORTS, NEWS and OLD."""
    destination = DestinationFactory(url=partner.url, max_wait_ms=0)
    map_segments(destination, SPORTS, NEWS, OLD)
    return destination


@pytest.fixture
def woken(monkeypatch) -> list[set[int]]:
    """Record the destinations woken through `delivery.tasks.schedule_flushes` instead of queueing."""
    calls: list[set[int]] = []
    monkeypatch.setattr(delivery.tasks, "schedule_flushes", calls.append)
    return calls


@pytest.fixture
def empty_redis(settings):
    """The test's own Redis database (TEST_BROKER_URL), emptied around the test."""
    client = scheduling_client()
    client.flushdb()
    yield client
    client.flushdb()
