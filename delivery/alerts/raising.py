"""Which alerts are due, raised exactly once each, whichever and however many jobs look (CONTRACT §7).

- A circuit transition raises one alert: its `ConfigChange` row (written by the breaker in the
  transaction of the state change) is named by the alert's unique `config_change`, so a second job
  that sees the same row fails its insert and moves on.
- A stale backlog (the oldest pending device of an enabled destination older than
  `AAMDEST_ALERT_BACKLOG_AGE_S`) raises one alert per episode: the episode row
  (`AlertEpisode`, per destination and condition) starts by a conditional UPDATE only one job wins,
  and clears (re-arms) once the backlog is fresh again.
- While a condition holds (the circuit is not closed, the backlog still stale), a reminder follows
  every `AAMDEST_ALERT_REMIND_HOURS`, claimed the same way on the episode's `last_alerted_at`.

Every alert gets one `AlertSend` per configured channel, in the transaction that raises it.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef

from delivery.alert_models import (
    Alert,
    AlertChannel,
    AlertCondition,
    AlertEpisode,
    AlertEvent,
    AlertSend,
)
from delivery.observability.stats import Backlog, pending_backlog
from destinations.models import ChangeAction, ChangeSource, ConfigChange, Destination

logger = logging.getLogger("aamdest.alerts")

TRANSITIONS = {
    ChangeAction.CIRCUIT_OPENED: AlertEvent.CIRCUIT_OPENED,
    ChangeAction.CIRCUIT_CLOSED: AlertEvent.CIRCUIT_CLOSED,
}
# Transitions taken per run; the next run takes the rest.
TRANSITIONS_PER_RUN = 100


def configured_channels() -> list[str]:
    channels: list[str] = []
    if settings.AAMDEST_ALERT_WEBHOOK_URL:
        channels.append(AlertChannel.WEBHOOK)
    if settings.AAMDEST_ALERT_EMAILS:
        channels.append(AlertChannel.EMAIL)
    return channels


def raise_alert(*, event: str, destination: Destination, at: dt.datetime, detail: str, now: dt.datetime,
                is_reminder: bool = False, config_change: ConfigChange | None = None) -> Alert:
    """Record the alert and one send per configured channel, due at once; call inside a transaction."""
    alert = Alert.objects.create(event=event, destination=destination, at=at, detail=detail,
                                 is_reminder=is_reminder, config_change=config_change)
    AlertSend.objects.bulk_create(
        [AlertSend(alert=alert, channel=channel, next_try_at=now) for channel in configured_channels()]
    )
    # Logged once it commits: an alert undone with its savepoint (another job won) was never raised.
    transaction.on_commit(lambda: logger.warning(
        "alert %s%s: destination %s (%s) at %s: %s", event, " (reminder)" if is_reminder else "",
        destination.pk, destination.name, at.isoformat(), detail,
    ))
    return alert


def raise_transition_alerts(*, now: dt.datetime) -> int:
    """One alert per circuit transition in the change log not yet alerted; returns how many were raised."""
    raised = 0
    with transaction.atomic():
        changes = list(
            ConfigChange.objects.filter(action__in=list(TRANSITIONS), destination__isnull=False)
            .filter(~Exists(Alert.objects.filter(config_change=OuterRef("pk"))))
            .select_for_update(skip_locked=True, of=("self",))
            .select_related("destination")
            .order_by("id")[:TRANSITIONS_PER_RUN]
        )
        for change in changes:
            try:
                with transaction.atomic():  # a savepoint: a lost race undoes this alert only
                    _raise_for_transition(change=change, now=now)
            except IntegrityError:
                continue  # another job raised it first (the unique config_change)
            raised += 1
    return raised


def _raise_for_transition(*, change: ConfigChange, now: dt.datetime) -> None:
    destination = change.destination
    assert destination is not None  # filtered above
    event = TRANSITIONS[ChangeAction(change.action)]
    raise_alert(event=event, destination=destination, at=change.created_at, detail=describe_change(change),
                now=now, config_change=change)
    episode = _episode(destination=destination, condition=AlertCondition.CIRCUIT_OPEN)
    if event == AlertEvent.CIRCUIT_OPENED:
        AlertEpisode.objects.filter(pk=episode.pk).update(started_at=change.created_at, last_alerted_at=now)
    else:
        AlertEpisode.objects.filter(pk=episode.pk).update(started_at=None)


def describe_change(change: ConfigChange) -> str:
    """The detail: the breaker's words (`changes["detail"]`, else its fields); who, if a person."""
    changes = change.changes if isinstance(change.changes, dict) else {}
    said = changes.get("detail")
    if not isinstance(said, str) or not said:
        listed = "; ".join(f"{key}: {value}" for key, value in sorted(changes.items()))
        said = listed or change.get_action_display()
    if change.source == ChangeSource.SYSTEM:
        return said
    return f"{said} (by {change.actor_name or 'unknown'}, through the {change.source})"


def _episode(*, destination: Destination, condition: str) -> AlertEpisode:
    episode, _ = AlertEpisode.objects.get_or_create(destination=destination, condition=condition)
    return episode


def raise_backlog_alerts(*, now: dt.datetime) -> int:
    """Raise backlog_stale for each enabled destination whose backlog just went stale; re-arm fresh ones."""
    stale = {destination_id: entry for destination_id, entry in pending_backlog().items()
             if is_stale(entry, now=now)}
    enabled = set(Destination.objects.filter(pk__in=list(stale), enabled=True).values_list("pk", flat=True))
    stale = {destination_id: entry for destination_id, entry in stale.items() if destination_id in enabled}
    # Re-arm: an episode whose backlog is fresh (or whose destination is paused) ends; one started
    # after this reading began (by another job, on newer data) is left alone.
    AlertEpisode.objects.filter(condition=AlertCondition.BACKLOG_STALE, started_at__isnull=False,
                                started_at__lt=now).exclude(destination_id__in=list(stale)).update(started_at=None)
    raised = 0
    for destination in Destination.objects.filter(pk__in=list(stale)).order_by("pk"):
        raised += _start_stale_episode(destination=destination, backlog=stale[destination.pk], now=now)
    return raised


def is_stale(backlog: Backlog | None, *, now: dt.datetime) -> bool:
    """Whether the oldest pending device has waited longer than AAMDEST_ALERT_BACKLOG_AGE_S."""
    limit = dt.timedelta(seconds=settings.AAMDEST_ALERT_BACKLOG_AGE_S)
    return backlog is not None and backlog.oldest_since is not None and backlog.oldest_since < now - limit


def _start_stale_episode(*, destination: Destination, backlog: Backlog, now: dt.datetime) -> int:
    episode = _episode(destination=destination, condition=AlertCondition.BACKLOG_STALE)
    with transaction.atomic():
        started = AlertEpisode.objects.filter(pk=episode.pk, started_at__isnull=True).update(
            started_at=now, last_alerted_at=now
        )
        if not started:
            return 0  # already stale and told; reminders follow from raise_reminders
        raise_alert(event=AlertEvent.BACKLOG_STALE, destination=destination, at=now,
                    detail=describe_backlog(backlog=backlog, now=now), now=now)
    return 1


def describe_backlog(*, backlog: Backlog, now: dt.datetime) -> str:
    assert backlog.oldest_since is not None
    waited = int((now - backlog.oldest_since).total_seconds())
    return (f"{backlog.devices} devices pending; the oldest has waited {waited} s (since "
            f"{backlog.oldest_since.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}), over "
            f"AAMDEST_ALERT_BACKLOG_AGE_S={settings.AAMDEST_ALERT_BACKLOG_AGE_S}")
