"""The beat job: `delivery.tasks.run_alerts` on the maintenance queue, every few seconds."""

from __future__ import annotations

import pytest

import delivery.tasks
from aamdest.celery import app
from delivery.alert_models import Alert
from destinations.models import ChangeAction
from tests.delivery.alerts.conftest import transition

pytestmark = pytest.mark.django_db


def test_beat_runs_the_alerts_every_5_seconds_on_the_maintenance_queue():
    entry = app.conf.beat_schedule["delivery-alerts"]

    assert (entry["task"], entry["schedule"]) == ("delivery.tasks.run_alerts", 5.0)
    assert app.amqp.router.route({}, "delivery.tasks.run_alerts")["queue"].name == "maintenance"


def test_the_task_raises_and_sends(receiver, failing_destination, mailoutbox):
    transition(failing_destination, ChangeAction.CIRCUIT_OPENED)

    delivery.tasks.run_alerts()

    assert Alert.objects.count() == 1
    assert len(receiver.wait_for_requests(1)) == 1
    assert len(mailoutbox) == 1
