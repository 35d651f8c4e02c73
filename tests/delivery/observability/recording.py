"""Deliveries recorded as the sender records them, so that the /metrics totals count them too."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils import timezone

from delivery.models import Delivery, DeliveryStatus
from delivery.sending.attempts import Sending, record_attempts
from delivery.sending.ending import end_deliveries
from delivery.sending.http import HttpResult
from destinations.models import Destination
from tests.delivery.log_rows import Try, log_delivery


def record_delivery(destination: Destination, *, tries: Sequence[Try], outcome: str) -> Delivery:
    """A pending delivery whose `tries` go through `record_attempts`, then ended with `outcome`.

    A `pending` outcome leaves it pending. Counting happens on commit: run it under
    `django_capture_on_commit_callbacks(execute=True)` for the totals to see it.
    """
    now = timezone.now()
    delivery = log_delivery(destination, created_at=now, outcome=DeliveryStatus.PENDING, tries=[])
    sending = Sending(delivery=delivery, attempt_number=1, lease=None)
    for number, attempt in enumerate(tries, start=1):
        sending.attempt_number = number
        result = HttpResult(
            status_code=attempt.status_code, duration_ms=attempt.duration_ms, reason=attempt.reason,
            error=attempt.error, response_excerpt=attempt.response_excerpt, started_at=now,
            body=attempt.response_excerpt.encode(),
        )
        record_attempts(destination=destination, sendings=[sending], results=[result])
    if outcome != DeliveryStatus.PENDING:
        end_deliveries(destination=destination, ended=[(sending, DeliveryStatus(outcome))])
    delivery.refresh_from_db()
    return delivery
