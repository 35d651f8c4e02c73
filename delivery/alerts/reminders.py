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
from delivery.alerts.raising import describe_backlog, is_stale, raise_alert
from delivery.observability.stats import Backlog, pending_backlog
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
        if episode.condition == AlertCondition.CIRCUIT_OPEN:
            if episode.destination.circuit_state == CircuitState.CLOSED:
                ended = AlertEpisode.objects.filter(pk=episode.pk, started_at=episode.started_at)
                ended.update(started_at=None)
                continue
            detail = _circuit_detail(episode=episode, now=now)
        else:
            backlog = pending_backlog(destination_ids=[episode.destination_id]).get(episode.destination_id)
            if not is_stale(backlog, now=now) or not episode.destination.enabled:
                continue  # drained or paused since: `check_backlogs` ends the episode
            assert backlog is not None
            detail = _backlog_detail(episode=episode, backlog=backlog, now=now)
        raised += _remind(episode=episode, detail=detail, now=now)
    return raised


def _remind(*, episode: AlertEpisode, detail: str, now: dt.datetime) -> int:
    assert episode.started_at is not None
    with transaction.atomic():
        claimed = AlertEpisode.objects.filter(
            pk=episode.pk, started_at=episode.started_at, last_alerted_at=episode.last_alerted_at
        ).update(last_alerted_at=now)
        if not claimed:
            return 0  # another job reminded, or the episode ended
        raise_alert(event=EVENTS[AlertCondition(episode.condition)], destination=episode.destination, at=now,
                    detail=detail, now=now, is_reminder=True)
    return 1


def _since(*, episode: AlertEpisode, now: dt.datetime) -> str:
    assert episode.started_at is not None
    hours = (now - episode.started_at).total_seconds() / 3600
    return f"since {episode.started_at.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ} ({hours:.1f} h)"


def _circuit_detail(*, episode: AlertEpisode, now: dt.datetime) -> str:
    return f"reminder: the circuit is still open, {_since(episode=episode, now=now)}"


def _backlog_detail(*, episode: AlertEpisode, backlog: Backlog, now: dt.datetime) -> str:
    state = describe_backlog(backlog=backlog, now=now)
    return f"reminder: the backlog is still stale, {_since(episode=episode, now=now)}: {state}"
