"""One run of the alerts: what beat's `run_alerts` task does every few seconds, on `maintenance` only.

Bounded: at most `raising.TRANSITIONS_PER_RUN` transitions and `sending.SENDS_PER_RUN` sends, each
within its channel's deadline (AAMDEST_ALERT_TIMEOUT_MS, EMAIL_TIMEOUT); the rest waits for the next
run. Safe to run twice at once (see `raising`, `reminders` and `sending`).
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
    backlogs: int
    reminders: int
    sent: int


def run_alerts(*, now: dt.datetime | None = None) -> AlertRun:
    """Raise the alerts due (transitions, stale backlogs, reminders), then send the due sends."""
    now = now or timezone.now()
    transitions = raise_transition_alerts(now=now)
    backlogs = raise_backlog_alerts(now=now)
    reminders = raise_reminders(now=now)
    sent = send_claimed(sends=claim_due_sends(now=now))
    return AlertRun(transitions=transitions, backlogs=backlogs, reminders=reminders, sent=sent)
