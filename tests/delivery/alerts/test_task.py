"""The beat job: `delivery.tasks.run_alerts` on the maintenance queue, every few seconds."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

import delivery.tasks
from aamdest.celery import app
from delivery.alert_models import Alert
from destinations.models import ChangeAction
from tests.delivery.alerts.conftest import transition
from tests.delivery.pending_work import pending_device

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("entry", "task", "every_s"), [
    ("delivery-alerts", "delivery.tasks.run_alerts", 5.0),
    ("delivery-alert-backlogs", "delivery.tasks.check_backlogs", 30.0),
])
def test_beat_runs_the_alert_jobs_on_the_maintenance_queue(entry, task, every_s):
    scheduled = app.conf.beat_schedule[entry]

    assert (scheduled["task"], scheduled["schedule"]) == (task, every_s)
    assert app.amqp.router.route({}, task)["queue"].name == "maintenance"


def test_the_task_raises_and_sends(receiver, failing_destination, mailoutbox):
    transition(failing_destination, ChangeAction.CIRCUIT_OPENED)

    delivery.tasks.run_alerts()

    assert Alert.objects.count() == 1
    assert len(receiver.wait_for_requests(1)) == 1
    assert len(mailoutbox) == 1


def test_the_backlog_task_raises_backlog_stale(receiver, failing_destination):
    pending_device(failing_destination, "dev-1", pending_since=timezone.now() - dt.timedelta(hours=1))

    delivery.tasks.check_backlogs()
    delivery.tasks.check_backlogs()

    assert list(Alert.objects.values_list("event", flat=True)) == ["backlog_stale"]
