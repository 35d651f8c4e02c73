"""Reminders: while a condition holds, the operators hear of it again every AAMDEST_ALERT_REMIND_HOURS.

An episode (`AlertEpisode`) whose last alert is older than that gets one reminder, claimed by a
conditional UPDATE of its `last_alerted_at`, so that two jobs never both remind. A circuit episode
is checked against the destination's own state first: one whose circuit closed meanwhile ends
without a reminder (its `circuit_closed` alert tells the rest). A stale backlog's episode holds as
long as `raising.raise_backlog_alerts` leaves it started.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import transaction

from delivery.alert_models import AlertCondition, AlertEpisode, AlertEvent
from delivery.alerts.raising import describe_backlog, raise_alert
from delivery.observability.stats import pending_backlog
from destinations.models import CircuitState

EVENTS = {AlertCondition.CIRCUIT_OPEN: AlertEvent.CIRCUIT_OPENED,
          AlertCondition.BACKLOG_STALE: AlertEvent.BACKLOG_STALE}


def raise_reminders(*, now: dt.datetime) -> int:
    """One reminder for each episode still holding and last told REMIND_HOURS ago; returns how many."""
    due = now - dt.timedelta(hours=settings.AAMDEST_ALERT_REMIND_HOURS)
    episodes = AlertEpisode.objects.filter(started_at__isnull=False, last_alerted_at__lte=due).select_related(
        "destination"
    )
    raised = 0
    for episode in episodes.order_by("pk"):
        if episode.condition == AlertCondition.CIRCUIT_OPEN and (
            episode.destination.circuit_state == CircuitState.CLOSED
        ):
            AlertEpisode.objects.filter(pk=episode.pk, started_at=episode.started_at).update(started_at=None)
            continue
        raised += _remind(episode=episode, now=now)
    return raised


def _remind(*, episode: AlertEpisode, now: dt.datetime) -> int:
    assert episode.started_at is not None
    with transaction.atomic():
        claimed = AlertEpisode.objects.filter(
            pk=episode.pk, started_at=episode.started_at, last_alerted_at=episode.last_alerted_at
        ).update(last_alerted_at=now)
        if not claimed:
            return 0  # another job reminded, or the episode ended
        raise_alert(event=EVENTS[AlertCondition(episode.condition)], destination=episode.destination, at=now,
                    detail=_detail(episode=episode, now=now), now=now, is_reminder=True)
    return 1


def _detail(*, episode: AlertEpisode, now: dt.datetime) -> str:
    assert episode.started_at is not None
    since = f"{episode.started_at.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}"
    hours = (now - episode.started_at).total_seconds() / 3600
    if episode.condition == AlertCondition.CIRCUIT_OPEN:
        return f"reminder: the circuit is still open, since {since} ({hours:.1f} h)"
    backlog = pending_backlog(destination_ids=[episode.destination_id]).get(episode.destination_id)
    state = describe_backlog(backlog=backlog, now=now) if backlog and backlog.oldest_since else "no backlog"
    return f"reminder: the backlog is still stale, since {since} ({hours:.1f} h): {state}"
