"""Reminders every AAMDEST_ALERT_REMIND_HOURS while the condition holds (CONTRACT §7), with time moved."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from delivery.alert_models import Alert, AlertEvent
from delivery.alerts.job import check_backlogs, run_alerts
from delivery.models import DestinationDevice
from destinations.models import ChangeAction
from tests.delivery.alerts.conftest import transition
from tests.delivery.pending_work import pending_device

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)


@pytest.fixture
def clock(quiet_channels):
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def _both_jobs() -> None:
    check_backlogs()
    run_alerts()


def _reminders(event: str) -> list[Alert]:
    return list(Alert.objects.filter(event=event, is_reminder=True).order_by("id"))


def test_an_open_circuit_is_reminded_every_remind_hours_until_it_closes(clock, failing_destination):
    # Given a circuit opened at T0 and told at once
    transition(failing_destination, ChangeAction.CIRCUIT_OPENED)
    run_alerts()

    # When 5 h 59 min pass, no reminder; at 6 h, one
    clock.move_to(T0 + dt.timedelta(hours=5, minutes=59))
    run_alerts()
    assert _reminders(AlertEvent.CIRCUIT_OPENED) == []
    clock.move_to(T0 + dt.timedelta(hours=6))
    run_alerts()
    run_alerts()
    [reminder] = _reminders(AlertEvent.CIRCUIT_OPENED)
    assert reminder.at == T0 + dt.timedelta(hours=6)
    assert reminder.detail == "reminder: the circuit is still open, since 2026-11-30T08:00:00Z (6.0 h)"

    # And the next comes 6 h after that one
    clock.move_to(T0 + dt.timedelta(hours=11, minutes=59))
    run_alerts()
    assert len(_reminders(AlertEvent.CIRCUIT_OPENED)) == 1
    clock.move_to(T0 + dt.timedelta(hours=12))
    run_alerts()
    assert len(_reminders(AlertEvent.CIRCUIT_OPENED)) == 2

    # When it closes, the reminders stop
    transition(failing_destination, ChangeAction.CIRCUIT_CLOSED)
    run_alerts()
    clock.move_to(T0 + dt.timedelta(hours=30))
    run_alerts()
    assert len(_reminders(AlertEvent.CIRCUIT_OPENED)) == 2
    assert Alert.objects.filter(event=AlertEvent.CIRCUIT_CLOSED).count() == 1


def test_a_circuit_found_closed_ends_its_episode_without_a_reminder(clock, failing_destination):
    # Given an opened alert, then the circuit closed without a transition seen yet
    transition(failing_destination, ChangeAction.CIRCUIT_OPENED)
    run_alerts()
    failing_destination.circuit_state = "closed"
    failing_destination.save()

    clock.move_to(T0 + dt.timedelta(hours=7))
    run_alerts()

    assert _reminders(AlertEvent.CIRCUIT_OPENED) == []


def test_the_remind_interval_is_a_setting(clock, failing_destination, settings):
    settings.AAMDEST_ALERT_REMIND_HOURS = 1
    transition(failing_destination, ChangeAction.CIRCUIT_OPENED)
    run_alerts()

    clock.move_to(T0 + dt.timedelta(hours=1))
    run_alerts()

    assert len(_reminders(AlertEvent.CIRCUIT_OPENED)) == 1


def test_a_stale_backlog_is_reminded_while_it_stays_stale(clock, failing_destination):
    # Given a backlog stale at T0 (its oldest device pending since 20 minutes before)
    device = pending_device(failing_destination, "dev-1", pending_since=T0 - dt.timedelta(minutes=20))
    _both_jobs()
    assert Alert.objects.filter(event=AlertEvent.BACKLOG_STALE, is_reminder=False).count() == 1

    # When it stays stale for 6 h: one reminder, saying since when and how old it is now
    clock.move_to(T0 + dt.timedelta(hours=6))
    _both_jobs()
    [reminder] = _reminders(AlertEvent.BACKLOG_STALE)
    assert reminder.detail.startswith(
        "reminder: the backlog is still stale, since 2026-11-30T08:00:00Z (6.0 h): 1 devices pending; "
        "the oldest has waited 22800 s"
    )

    # When it drains, no more reminders; stale again later: a new alert, not a reminder
    DestinationDevice.objects.filter(pk=device.pk).update(pending_since=None)
    clock.move_to(T0 + dt.timedelta(hours=12))
    _both_jobs()
    assert len(_reminders(AlertEvent.BACKLOG_STALE)) == 1
    DestinationDevice.objects.filter(pk=device.pk).update(pending_since=T0 + dt.timedelta(hours=11))
    _both_jobs()
    assert Alert.objects.filter(event=AlertEvent.BACKLOG_STALE, is_reminder=False).count() == 2
    assert len(_reminders(AlertEvent.BACKLOG_STALE)) == 1


def test_a_backlog_drained_since_its_last_check_gets_no_reminder(clock, failing_destination):
    # Given a stale backlog told at T0, which drained before the backlog job looked again
    device = pending_device(failing_destination, "dev-1", pending_since=T0 - dt.timedelta(minutes=20))
    _both_jobs()
    DestinationDevice.objects.filter(pk=device.pk).update(pending_since=None)

    # When only the 5-second job runs once a reminder would be due
    clock.move_to(T0 + dt.timedelta(hours=6))
    run_alerts()

    # Then no reminder: the backlog is no longer stale
    assert _reminders(AlertEvent.BACKLOG_STALE) == []
