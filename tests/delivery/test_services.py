"""Redelivery, the operator action on the delivery log: the service, then each door (API, admin, console)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

import delivery.tasks
from delivery import services
from delivery.models import Delivery, DeliveryKind, DeliveryStatus
from destinations.models import ConfigChange
from tests.delivery.log_rows import TIMEOUT, log_delivery, status
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    """The delivery IDs handed to the broker (after commit)."""
    sent: list[int] = []
    monkeypatch.setattr(delivery.tasks.send_delivery_task, "delay", sent.append)
    return sent


def failed(destination=None, *, at: dt.datetime | None = None) -> Delivery:
    return log_delivery(destination or DestinationFactory(), created_at=at or timezone.now(),
                        outcome=DeliveryStatus.FAILED, tries=[TIMEOUT])


def pending(destination=None) -> Delivery:
    return log_delivery(destination or DestinationFactory(), created_at=timezone.now(),
                        outcome=DeliveryStatus.PENDING, tries=[])


# --- The services ------------------------------------------------------------------------------------


def test_a_redelivery_repeats_the_document_and_is_queued_once_committed(
    queued, django_capture_on_commit_callbacks
):
    original = failed()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        new = services.redeliver(delivery=original)
    before_commit = list(queued)
    for callback in callbacks:
        callback()

    assert (new.kind, new.status, new.redelivery_of_id, new.document_id) == (
        "redelivery", "pending", original.pk, original.document_id)
    assert bytes(new.body) == bytes(original.body)
    assert (before_commit, queued) == ([], [new.pk])
    assert not ConfigChange.objects.exists()  # the delivery log is the record, not the change log


def test_a_pending_delivery_is_not_redelivered(queued, django_capture_on_commit_callbacks):
    original = pending()

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(services.RedeliveryConflict):
        services.redeliver(delivery=original)

    assert (Delivery.objects.count(), queued) == (1, [])


def test_redelivering_the_failures_since_a_time_sends_each_document_once(
    queued, django_capture_on_commit_callbacks
):
    # Given a destination's failures: one too old, one already redelivered, one to redeliver; a success
    destination, now = DestinationFactory(), timezone.now()
    failed(destination, at=now - dt.timedelta(days=3))
    redelivered = failed(destination, at=now)
    log_delivery(destination, created_at=now, redelivery_of=redelivered, kind=DeliveryKind.REDELIVERY)
    eligible = log_delivery(destination, created_at=now, outcome=DeliveryStatus.FAILED, tries=[status(500)])
    log_delivery(destination, created_at=now)

    # When
    with django_capture_on_commit_callbacks(execute=True):
        report = services.redeliver_failed_since(destination=destination, since=now - dt.timedelta(days=1))

    # Then
    assert [new.redelivery_of_id for new in report.queued] == [eligible.pk]
    assert report.skipped == 0
    assert queued == [report.queued[0].pk]


# --- Through each door -------------------------------------------------------------------------------


@dataclass
class Door:
    name: str
    client: Any

    def redeliver(self, original: Delivery):
        if self.name == "api":
            return self.client.post(f"/api/v1/deliveries/{original.pk}/redeliver/")
        if self.name == "admin":
            data = {"action": "redeliver_selected", "_selected_action": [original.pk]}
            return self.client.post("/admin/delivery/delivery/", data, follow=True)
        return self.client.post(f"/dashboard/deliveries/{original.pk}/redeliver/", follow=True)


@pytest.fixture(params=["api", "admin", "console"])
def door(request) -> Door:
    if request.param == "api":
        return Door("api", request.getfixturevalue("operator_client"))
    if request.param == "admin":
        return Door("admin", request.getfixturevalue("admin_client"))
    user = User.objects.create_user("console-operator")
    user.groups.add(Group.objects.get_or_create(name="operator")[0])
    client = Client()
    client.force_login(user)
    return Door("console", client)


def test_a_redelivery_is_created_and_queued_alike_through_every_door(
    door, queued, django_capture_on_commit_callbacks
):
    original = failed()

    with django_capture_on_commit_callbacks(execute=True):
        response = door.redeliver(original)

    new = Delivery.objects.get(redelivery_of=original)
    assert (new.kind, new.status, new.document_id) == ("redelivery", "pending", original.document_id)
    assert queued == [new.pk]
    assert response.status_code == (202 if door.name == "api" else 200)
    assert not ConfigChange.objects.exists()


def test_a_pending_delivery_is_refused_alike_through_every_door(
    door, queued, django_capture_on_commit_callbacks
):
    original = pending()

    with django_capture_on_commit_callbacks(execute=True):
        response = door.redeliver(original)

    assert (Delivery.objects.count(), queued) == (1, [])
    if door.name == "admin":
        [message] = list(response.context["messages"])
        assert message.level_tag == "warning" and "still pending" in message.message
    else:
        assert response.status_code == 409 and "still pending" in response.content.decode()
