"""The alerts' two beat jobs, on the `maintenance` queue only, so that an alert never holds a delivery.

- `run_alerts`, every 5 seconds: raise the circuit transitions' alerts and the reminders due, then
  send (and retry) the due sends. Cheap when idle: it reads the change log's new transitions, the
  episodes and the due sends, all small.
- `check_backlogs`, every 30 seconds: raise backlog_stale where a backlog went stale. It groups the
  pending devices by destination (as /metrics does), the one query that grows with the backlog.

Bounded: at most `raising.TRANSITIONS_PER_RUN` transitions and `sending.SENDS_PER_RUN` sends a run,
each within its channel's deadline (AAMDEST_ALERT_TIMEOUT_MS, EMAIL_TIMEOUT); the rest waits for the
next run. Safe to run twice at once (see `raising`, `reminders` and `sending`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.utils import timezone

from delivery.alerts.raising import raise_backlog_alerts, raise_transition_alerts
from delivery.alerts.reminders import raise_reminders
from delivery.alerts.sending import claim_due_sends, send_claimed


@dataclass(frozen=True)
class AlertRun:
    transitions: int
    reminders: int
    sent: int


def run_alerts(*, now: dt.datetime | None = None) -> AlertRun:
    """Raise the transitions' alerts and the reminders due, then send the due sends."""
    now = now or timezone.now()
    transitions = raise_transition_alerts(now=now)
    reminders = raise_reminders(now=now)
    sent = send_claimed(sends=claim_due_sends(now=now))
    return AlertRun(transitions=transitions, reminders=reminders, sent=sent)


def check_backlogs(*, now: dt.datetime | None = None) -> int:
    """Raise backlog_stale for the backlogs that went stale (re-arm the fresh); returns how many."""
    return raise_backlog_alerts(now=now or timezone.now())
