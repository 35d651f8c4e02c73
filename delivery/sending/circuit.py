"""The circuit breaker (CONTRACT §7): stop sending to a partner that is down, probe it, close on a 200.

The state is the destination's row (`circuit_state`, `circuit_opened_at`,
`circuit_next_probe_at`, `circuit_probe_interval_s`, `consecutive_failures`),
shared by every worker on every machine and changed only here, by conditional
UPDATEs: no worker keeps any of it in memory.

- Counting (`count_round`, in each attempt round's transaction): a round's
  failed attempts add to `consecutive_failures`; any success in it resets the
  count to 0. Test documents are not counted (an operator's try proves nothing
  about the traffic), except a probe's.
- Opening: with `circuit_breaker` on, once `consecutive_failures` reaches
  `circuit_failure_threshold` the round that got there opens the circuit
  (closed → open, first probe `PROBE_FIRST_S` later). The deliveries whose
  failures opened it end `failed` as before; their devices go out again once it
  closes (`delivery.sending.outage.resend_later`), as do those of deliveries
  that fail while it is open (rounds already in flight, failed probes).
- While open nothing is sent but probes: claims, retries, redeliveries,
  taken-back deliveries and batch sends all ask `is_blocked` first and wait
  (a leased delivery is parked, `delivery.leases.park_owned`).
- Probing (`take_probe`): when `circuit_next_probe_at` has come, one worker wins
  the conditional UPDATE open → half_open, which sets `circuit_next_probe_at` to
  the probe's deadline (its timeout plus `PROBE_MARGIN`). Two workers never probe
  at once; a prober that dies leaves a half_open circuit whose deadline passes,
  and the next `take_probe` takes it over. The probe's end (`end_probe`) is
  conditional on that deadline, so a prober that was taken over changes nothing.
  200 closes the circuit; anything else re-opens it with the interval doubled
  (30 s, 60 s, 120 s, … capped at `PROBE_MAX_S`).
- Closing (`close_circuit`): by a probe's 200, by an operator
  (`delivery.services.close_circuit`), or when the breaker is turned off while
  the circuit is open. The caller then wakes the destination with a concurrency
  ramp (`delivery.realtime.probing.wake_after_close`).

Every closed → open and open/half_open → closed transition writes one change-log
row (`destinations.audit.record_circuit_change`) in the transaction that made it;
open ↔ half_open (probing) writes none. With `circuit_breaker` off, nothing opens:
every request fails after its retries, as Adobe's do.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from delivery.sending import backoff
from delivery.sending.http import HttpResult
from destinations.audit import record_circuit_change
from destinations.models import ChangeAction, ChangeSource, CircuitState, Destination

PROBE_FIRST_S = 30
PROBE_MAX_S = 15 * 60
# A probe not ended within its timeout plus this is taken to have died with its worker.
PROBE_MARGIN = dt.timedelta(seconds=30)
CIRCUIT_FIELDS = [
    "circuit_breaker", "circuit_failure_threshold", "circuit_state", "circuit_opened_at",
    "circuit_next_probe_at", "circuit_probe_interval_s", "consecutive_failures", "hold_until",
]


@dataclass(frozen=True)
class Probe:
    """A probe this worker won: its destination, and its deadline (the ownership token)."""

    destination: Destination
    deadline: dt.datetime


@dataclass(frozen=True)
class RoundCount:
    """What a round's count found: `opened` if this round opened the circuit; `is_open` after it."""

    opened: bool
    is_open: bool


def is_open(destination: Destination) -> bool:
    """Whether the circuit is open or probing, as `destination` was last read."""
    return destination.circuit_state != CircuitState.CLOSED


def is_held(destination: Destination, *, now: dt.datetime) -> bool:
    """Whether a Retry-After hold lasts past `now`, as `destination` was last read."""
    return destination.hold_until is not None and destination.hold_until > now


def is_blocked(destination: Destination, *, now: dt.datetime) -> bool:
    """Whether nothing but a probe may be sent to `destination` now (circuit not closed, or held)."""
    return is_open(destination) or is_held(destination, now=now)


def refresh_circuit(destination: Destination) -> None:
    """Re-read the circuit's state and hold (another worker may have changed them)."""
    destination.refresh_from_db(fields=CIRCUIT_FIELDS)


def sendable() -> Q:
    """The destinations that may be sent to now, as a filter on `Destination` (prefix it for relations)."""
    not_held = Q(hold_until__isnull=True) | Q(hold_until__lte=timezone.now())
    return Q(circuit_state=CircuitState.CLOSED) & not_held


def count_round(*, destination: Destination, results: list[HttpResult], last_error: str,
                now: dt.datetime) -> RoundCount:
    """Count a round's attempts (not a probe's), apply a Retry-After hold, open the circuit at the threshold.

    Call inside the round's transaction, after its deliveries ended. `last_error`:
    the round's last failure as stored, for the change log.
    """
    hold = backoff.hold_of(results, now=now)
    if hold is not None:
        backoff.extend_hold(destination=destination, until=hold)
    failures = sum(not result.is_success for result in results)
    row = Destination.objects.filter(pk=destination.pk)
    if failures < len(results):
        row.filter(consecutive_failures__gt=0).update(consecutive_failures=0)
    elif failures:
        row.update(consecutive_failures=F("consecutive_failures") + failures)
    opened = failures == len(results) > 0 and _open(destination=destination, last_error=last_error, now=now)
    refresh_circuit(destination)
    return RoundCount(opened=opened, is_open=is_open(destination))


def _open(*, destination: Destination, last_error: str, now: dt.datetime) -> bool:
    """closed → open when the count reached the threshold and the breaker is on; True if this call did."""
    reached = Destination.objects.filter(
        pk=destination.pk, circuit_breaker=True, circuit_state=CircuitState.CLOSED,
        consecutive_failures__gte=F("circuit_failure_threshold"),
    )
    opened = reached.update(
        circuit_state=CircuitState.OPEN, circuit_opened_at=now,
        circuit_next_probe_at=now + dt.timedelta(seconds=PROBE_FIRST_S),
        circuit_probe_interval_s=PROBE_FIRST_S,
    )
    if not opened:
        return False
    refresh_circuit(destination)
    detail = (f"{destination.consecutive_failures} consecutive failed attempts "
              f"(threshold {destination.circuit_failure_threshold}); last error: {last_error or 'none'}")
    record_circuit_change(destination=destination, action=ChangeAction.CIRCUIT_OPENED,
                          old_state=CircuitState.CLOSED, detail=detail[:1000])
    return True


def find_due_probe_ids(*, now: dt.datetime) -> set[int]:
    """The enabled destinations whose next probe has come (or whose prober died), and not held."""
    return set(Destination.objects.filter(_probe_due(now)).values_list("pk", flat=True))


def _probe_due(now: dt.datetime) -> Q:
    probing = Q(circuit_state=CircuitState.OPEN) | Q(circuit_state=CircuitState.HALF_OPEN)
    not_held = Q(hold_until__isnull=True) | Q(hold_until__lte=now)
    # A paused destination is not probed either: nothing at all is sent to it (CONTRACT §2).
    return probing & not_held & Q(circuit_breaker=True, enabled=True, circuit_next_probe_at__lte=now)


def take_probe(*, destination_id: int, now: dt.datetime) -> Probe | None:
    """Win the destination's due probe (open → half_open, or a dead prober's half_open); None if not won."""
    destination = Destination.objects.filter(pk=destination_id).first()
    if destination is None:
        return None
    deadline = now + dt.timedelta(milliseconds=destination.timeout_ms) + PROBE_MARGIN
    won = Destination.objects.filter(_probe_due(now), pk=destination_id).update(
        circuit_state=CircuitState.HALF_OPEN, circuit_next_probe_at=deadline
    )
    if not won:
        return None
    refresh_circuit(destination)
    return Probe(destination=destination, deadline=deadline)


def end_probe(*, probe: Probe, result: HttpResult, last_error: str, now: dt.datetime) -> bool:
    """Close the circuit on the probe's 200, else re-open it with the interval doubled; True if closed.

    Conditional on the probe still being this worker's (half_open, its deadline): a probe
    taken over, or a circuit closed by hand meanwhile, is left as it is. Call inside the
    probe round's transaction. A Retry-After in the answer holds the destination as usual.
    """
    destination = probe.destination
    hold = backoff.hold_of([result], now=now)
    if hold is not None:
        backoff.extend_hold(destination=destination, until=hold)
    if result.is_success:
        closed = close_circuit(destination=destination, detail=f"a probe was answered 200 after "
                               f"{_open_for(destination, now=now)}", probe_deadline=probe.deadline)
        refresh_circuit(destination)
        return closed
    owned = Destination.objects.filter(
        pk=destination.pk, circuit_state=CircuitState.HALF_OPEN, circuit_next_probe_at=probe.deadline
    )
    interval = min(max(destination.circuit_probe_interval_s, PROBE_FIRST_S // 2) * 2, PROBE_MAX_S)
    owned.update(
        circuit_state=CircuitState.OPEN, circuit_probe_interval_s=interval,
        circuit_next_probe_at=now + dt.timedelta(seconds=interval),
        consecutive_failures=F("consecutive_failures") + 1,
    )
    refresh_circuit(destination)
    return False


def _open_for(destination: Destination, *, now: dt.datetime) -> str:
    if destination.circuit_opened_at is None:
        return "a while"
    return f"{int((now - destination.circuit_opened_at).total_seconds())} s open"


def close_circuit(
    *,
    destination: Destination,
    detail: str,
    actor: AbstractBaseUser | AnonymousUser | None = None,
    source: str = ChangeSource.SYSTEM,
    probe_deadline: dt.datetime | None = None,
) -> bool:
    """open/half_open → closed (counters reset) and record it; False when it was closed already.

    `probe_deadline`: close only if that probe still owns the half_open circuit.
    """
    with transaction.atomic():
        not_closed = Destination.objects.select_for_update().filter(pk=destination.pk).exclude(
            circuit_state=CircuitState.CLOSED
        )
        if probe_deadline is not None:
            not_closed = not_closed.filter(circuit_state=CircuitState.HALF_OPEN,
                                           circuit_next_probe_at=probe_deadline)
        old_state = not_closed.values_list("circuit_state", flat=True).first()
        if old_state is None:
            return False
        Destination.objects.filter(pk=destination.pk).update(
            circuit_state=CircuitState.CLOSED, circuit_opened_at=None, circuit_next_probe_at=None,
            circuit_probe_interval_s=0, consecutive_failures=0,
        )
        refresh_circuit(destination)
        record_circuit_change(destination=destination, action=ChangeAction.CIRCUIT_CLOSED,
                              old_state=old_state, detail=detail, actor=actor, source=source)
    return True


def release_turned_off(*, now: dt.datetime) -> list[int]:
    """Close the circuits left open on destinations whose breaker was turned off; return their ids."""
    released = []
    left_open = Destination.objects.filter(circuit_breaker=False).exclude(circuit_state=CircuitState.CLOSED)
    for destination in left_open:
        if close_circuit(destination=destination, detail="the circuit breaker was turned off"):
            released.append(destination.pk)
    return released
