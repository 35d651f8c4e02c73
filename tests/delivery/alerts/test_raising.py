"""Which alerts are raised: one per circuit transition, one per stale-backlog episode (CONTRACT §7)."""

from __future__ import annotations

import datetime as dt
import logging
import threading

import pytest
from django.db import connection
from django.utils import timezone

from delivery.alert_models import Alert, AlertChannel, AlertCondition, AlertEpisode, AlertEvent, AlertSend
from delivery.alerts.job import check_backlogs, run_alerts
from delivery.alerts.raising import raise_backlog_alerts, raise_transition_alerts
from destinations.models import ChangeAction, ChangeSource, ConfigChange
from tests.delivery.alerts.conftest import transition
from tests.delivery.concurrency import held_in_another_transaction
from tests.delivery.pending_work import pending_device
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db


def test_a_circuit_transition_raises_one_alert_with_one_send_per_channel(receiver, failing_destination):
    # Given the breaker opened the circuit
    change = transition(failing_destination, ChangeAction.CIRCUIT_OPENED)

    # When the alerts look, twice
    first = raise_transition_alerts(now=timezone.now())
    second = raise_transition_alerts(now=timezone.now())

    # Then one alert tells of it, due on both channels
    assert (first, second) == (1, 0)
    alert = Alert.objects.get()
    assert (alert.event, alert.destination_id, alert.at, alert.config_change_id) == (
        AlertEvent.CIRCUIT_OPENED, failing_destination.pk, change.created_at, change.pk
    )
    assert alert.detail == "10 consecutive failed attempts (threshold 10); last error: HTTP 503"
    assert sorted(AlertSend.objects.values_list("channel", "status", "attempts")) == [
        (AlertChannel.EMAIL, "pending", 0), (AlertChannel.WEBHOOK, "pending", 0),
    ]


def test_opening_then_closing_raises_two_alerts_in_order(quiet_channels, failing_destination):
    transition(failing_destination, ChangeAction.CIRCUIT_OPENED)
    transition(failing_destination, ChangeAction.CIRCUIT_CLOSED, detail="probe answered 200")

    raise_transition_alerts(now=timezone.now())

    assert list(Alert.objects.order_by("id").values_list("event", "detail")) == [
        (AlertEvent.CIRCUIT_OPENED, "10 consecutive failed attempts (threshold 10); last error: HTTP 503"),
        (AlertEvent.CIRCUIT_CLOSED, "probe answered 200"),
    ]
    assert not AlertSend.objects.exists()  # no channel configured: recorded only
    episode = AlertEpisode.objects.get(condition=AlertCondition.CIRCUIT_OPEN)
    assert episode.started_at is None


def test_a_circuit_closed_by_hand_says_who_closed_it(quiet_channels, failing_destination):
    transition(failing_destination, ChangeAction.CIRCUIT_CLOSED, source=ChangeSource.API, actor_name="alice",
               detail="closed by hand")

    raise_transition_alerts(now=timezone.now())

    assert Alert.objects.get().detail == "closed by hand (by alice, through the api)"


def test_other_changes_raise_nothing(quiet_channels, failing_destination):
    ConfigChange.objects.create(actor_name="alice", source=ChangeSource.API, action=ChangeAction.UPDATE,
                                object_type="destination", object_id=str(failing_destination.pk),
                                object_repr="acme", destination=failing_destination)

    assert raise_transition_alerts(now=timezone.now()) == 0


@pytest.mark.postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_transition_another_job_holds_is_left_to_it(quiet_channels, failing_destination):
    # Given another job has taken the transition (its row locked, not yet committed)
    change = transition(failing_destination, ChangeAction.CIRCUIT_OPENED)

    def take() -> None:
        list(ConfigChange.objects.select_for_update().filter(pk=change.pk))

    with held_in_another_transaction(take):
        # When this job looks meanwhile, then it skips it rather than wait or raise it twice
        assert raise_transition_alerts(now=timezone.now()) == 0

    # And once the other job let go without raising, the next run does
    assert raise_transition_alerts(now=timezone.now()) == 1


@pytest.mark.django_db(transaction=True)
def test_two_jobs_at_once_raise_exactly_one_alert_per_transition(quiet_channels):
    # Given 12 transitions over 4 destinations, each with a stale backlog
    destinations = [DestinationFactory() for _ in range(4)]
    for destination in destinations:
        transition(destination, ChangeAction.CIRCUIT_OPENED)
        transition(destination, ChangeAction.CIRCUIT_CLOSED)
        transition(destination, ChangeAction.CIRCUIT_OPENED)
        an_hour_ago = timezone.now() - dt.timedelta(hours=1)
        pending_device(destination, f"dev-{destination.pk}", pending_since=an_hour_ago)

    # When two jobs run at the same moment, three times over
    for _ in range(3):
        _run_together(jobs=2)

    # Then each transition has exactly one alert, each stale backlog one
    per_change = Alert.objects.exclude(config_change=None).values_list("config_change_id", flat=True)
    assert sorted(per_change) == sorted(ConfigChange.objects.values_list("id", flat=True))
    assert Alert.objects.exclude(config_change=None).count() == 12
    stale = Alert.objects.filter(event=AlertEvent.BACKLOG_STALE).values_list("destination_id", flat=True)
    assert sorted(stale) == sorted(destination.pk for destination in destinations)


def _run_together(*, jobs: int) -> None:
    barrier = threading.Barrier(jobs)
    errors: list[BaseException] = []

    def job() -> None:
        try:
            barrier.wait(10)
            check_backlogs()
            run_alerts()
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=job) for _ in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors


# ---- stale backlogs ----------------------------------------------------------------------------


def test_a_stale_backlog_raises_once_per_episode_and_rearms_once_fresh(receiver, failing_destination):
    now = timezone.now()
    # Given a device pending for 11 minutes (over AAMDEST_ALERT_BACKLOG_AGE_S=600) and a fresh one
    stale = pending_device(failing_destination, "dev-1", pending_since=now - dt.timedelta(minutes=11))
    pending_device(failing_destination, "dev-2", pending_since=now - dt.timedelta(seconds=5))

    # When the alerts look, twice
    assert raise_backlog_alerts(now=now) == 1
    assert raise_backlog_alerts(now=now + dt.timedelta(seconds=5)) == 0

    # Then one backlog_stale alert says how big and how old
    alert = Alert.objects.get()
    assert (alert.event, alert.destination_id, alert.at) == (
        AlertEvent.BACKLOG_STALE, failing_destination.pk, now
    )
    assert alert.detail.startswith("2 devices pending; the oldest has waited 660 s (since ")
    assert AlertSend.objects.filter(alert=alert).count() == 2

    # When the stale device goes out, the episode ends; a new stale backlog raises a new alert
    stale.pending_since = None
    stale.save()
    assert raise_backlog_alerts(now=now + dt.timedelta(seconds=10)) == 0
    assert AlertEpisode.objects.get(condition=AlertCondition.BACKLOG_STALE).started_at is None
    assert raise_backlog_alerts(now=now + dt.timedelta(minutes=12)) == 1
    assert Alert.objects.filter(event=AlertEvent.BACKLOG_STALE).count() == 2


def test_a_fresh_backlog_raises_nothing(receiver, failing_destination):
    now = timezone.now()
    pending_device(failing_destination, "dev-1", pending_since=now - dt.timedelta(seconds=599))

    assert raise_backlog_alerts(now=now) == 0
    assert not Alert.objects.exists()


def test_a_paused_destination_backlog_raises_nothing(receiver, failing_destination):
    now = timezone.now()
    pending_device(failing_destination, "dev-1", pending_since=now - dt.timedelta(hours=1))
    failing_destination.enabled = False
    failing_destination.save()

    assert raise_backlog_alerts(now=now) == 0


def test_the_backlog_age_is_a_setting(receiver, failing_destination, settings):
    settings.AAMDEST_ALERT_BACKLOG_AGE_S = 30
    now = timezone.now()
    pending_device(failing_destination, "dev-1", pending_since=now - dt.timedelta(seconds=31))

    assert raise_backlog_alerts(now=now) == 1
    assert "AAMDEST_ALERT_BACKLOG_AGE_S=30" in Alert.objects.get().detail


def test_a_raised_alert_is_logged_once_it_commits(quiet_channels, failing_destination, caplog,
                                                  django_capture_on_commit_callbacks):
    transition(failing_destination, ChangeAction.CIRCUIT_OPENED)

    with caplog.at_level(logging.WARNING, logger="aamdest.alerts"), django_capture_on_commit_callbacks(
        execute=True
    ):
        raise_transition_alerts(now=timezone.now())

    [record] = [record for record in caplog.records if record.name == "aamdest.alerts"]
    message = record.getMessage()
    assert message.startswith(f"alert circuit_opened: destination {failing_destination.pk} (acme) at ")
    assert message.endswith("10 consecutive failed attempts (threshold 10); last error: HTTP 503")
