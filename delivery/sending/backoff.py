"""Backoff: a partner's `Retry-After` holds the destination (CONTRACT §7).

A 429 or 503 answer with `Retry-After` (a number of seconds, or an HTTP date)
makes the destination send nothing until then, capped at `MAX_HOLD_S` from the
answer; an invalid or past value is ignored. The hold is `Destination.hold_until`,
shared by every worker: it only ever moves later (a conditional UPDATE), so a
short hold answered after a long one never shortens it. The attempt itself
counts as failed, and its retry waits at least until the hold ends
(`delivery.sending.rounds`). Holds apply whether the circuit breaker is on or off.

Who honours the hold: real-time claims (`delivery.realtime.claiming`), the
retry wait, redeliveries and taken-back deliveries (parked until it passes,
`delivery.leases.take_parked`), batch sends and probes (`delivery.sending.circuit.is_held`).
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Iterable

from django.db.models import Q

from delivery.sending.http import HttpResult
from destinations.models import Destination

MAX_HOLD_S = 300
HOLDING_STATUSES = frozenset({429, 503})


def parse_retry_after(value: str, *, now: dt.datetime) -> dt.datetime | None:
    """Return until when `Retry-After: value` holds, from `now`, capped at `MAX_HOLD_S`; None if invalid.

    `value` is delta-seconds (digits only, RFC 9110 §10.2.3) or an HTTP date
    (IMF-fixdate, or the obsolete RFC 850 and asctime forms). 0, a past date and
    anything else hold nothing.
    """
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = min(int(value), MAX_HOLD_S)
        return now + dt.timedelta(seconds=seconds) if seconds > 0 else None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)  # HTTP dates are GMT
    if moment <= now:
        return None
    return min(moment, now + dt.timedelta(seconds=MAX_HOLD_S))


def hold_of(results: Iterable[HttpResult], *, now: dt.datetime) -> dt.datetime | None:
    """The latest hold that a round's answers ask for (429/503 with a valid Retry-After), or None."""
    holds = [
        parse_retry_after(result.headers["retry-after"], now=now)
        for result in results
        if result.status_code in HOLDING_STATUSES and "retry-after" in result.headers
    ]
    return max((hold for hold in holds if hold is not None), default=None)


def extend_hold(*, destination: Destination, until: dt.datetime) -> bool:
    """Hold `destination` until `until`, unless it is already held as long; return whether it moved.

    One conditional UPDATE: concurrent rounds never move the hold earlier.
    """
    later = Q(hold_until__isnull=True) | Q(hold_until__lt=until)
    moved = Destination.objects.filter(later, pk=destination.pk).update(hold_until=until) == 1
    if moved:
        destination.hold_until = until
    return moved


def hold_remaining_ms(*, destination: Destination, now: dt.datetime) -> int:
    """How long `destination` is still held, in milliseconds (0: not held), by the `hold_until` it holds.

    Callers read it fresh first (`delivery.sending.circuit.refresh_circuit` reads it with the circuit).
    """
    hold = destination.hold_until
    if hold is None or hold <= now:
        return 0
    return int((hold - now) / dt.timedelta(milliseconds=1))
