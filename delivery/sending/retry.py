"""The retry policy (CONTRACT §2), as one pure function.

Success is `200 OK` and nothing else. Any failure (timeout, connection, TLS,
a token endpoint failing, any other status, 201, 204 and redirects included) is
retried `max_retries` times, each after the destination's `retry_delay_ms`;
then the delivery is failed.
"""

from __future__ import annotations

from typing import Protocol


class Outcome(Protocol):
    """What the policy needs to know of an attempt's result (`delivery.sending.http.HttpResult` fits)."""

    @property
    def is_success(self) -> bool: ...


def should_retry(*, attempt_number: int, max_retries: int, result: Outcome) -> bool:
    """Return True when attempt `attempt_number` (1 = the first) failed and a retry is still allowed."""
    if result.is_success:
        return False
    retries_made = attempt_number - 1
    return retries_made < max_retries
