"""Real-time requests claimed for the sending tests, and the attempts they end with."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from django.utils import timezone

from delivery.models import Delivery
from delivery.realtime.claiming import claim_due_requests
from destinations.models import Destination
from tests.delivery.pending_work import SPORTS, pending_devices

SEGMENT = SPORTS
KEY = "sample_partner_private_key"


def claim(destination: Destination, count: int = 1) -> list[Delivery]:
    """Claim the requests of `count` devices pending in SEGMENT for a second (15 devices fill two)."""
    now = timezone.now()
    pending_devices(destination, count, pending_since=now - dt.timedelta(seconds=1), segment_id=SEGMENT)
    return claim_due_requests(destination=destination, now=now, max_requests=10)


def attempts_of(delivery: Delivery) -> list[tuple[int, int | None, str | None]]:
    return list(delivery.attempts.order_by("number").values_list("number", "status_code", "reason"))


def waiting_with(during_wait: Callable[[float], object]) -> Callable[[float], bool]:
    """A stand-in for `rounds.wait_unless_stopping` that runs `during_wait(seconds)` and is never stopped."""

    def wait(seconds: float) -> bool:
        during_wait(seconds)
        return False

    return wait
