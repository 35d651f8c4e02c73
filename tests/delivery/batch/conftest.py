"""The batch-mode tests' destination."""

from __future__ import annotations

import pytest

from destinations.models import Destination
from tests.delivery.pending_work import NEWS, SPORTS, map_segments
from tests.factories import DestinationFactory


@pytest.fixture
def batch_destination(partner, clock) -> Destination:
    """A batch-only destination at the local partner, cut daily, 3 users a request; GAMES is not mapped."""
    destination = DestinationFactory(url=partner.url, realtime=False, batch_interval_hours=24,
                                     max_users_per_request=3, max_wait_ms=0)
    map_segments(destination, SPORTS, NEWS)
    return destination
