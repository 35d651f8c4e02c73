"""What each console button does: pause and resume, test document, send the batch now, redeliver."""

from __future__ import annotations

import datetime as dt

import pytest
from kombu.exceptions import OperationalError as KombuOperationalError

from delivery.models import Delivery, DeliveryKind, DeliveryStatus
from destinations.models import ConfigChange
from tests.delivery.console.console_clients import FakeTask, messages_of
from tests.delivery.log_rows import TIMEOUT, log_delivery, status
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db


def test_an_operator_pauses_and_resumes_a_destination(operator):
    destination = DestinationFactory()

    paused = operator.post(f"/dashboard/destinations/{destination.pk}/pause/", follow=True)
    destination.refresh_from_db()
    assert not destination.enabled
    assert "paused" in messages_of(paused)[0]
    assert b"Resume</button>" in paused.content

    operator.post(f"/dashboard/destinations/{destination.pk}/resume/")
    destination.refresh_from_db()
    assert destination.enabled


def test_pausing_and_resuming_from_the_console_is_recorded_in_the_change_log(operator):
    # Given a destination
    destination = DestinationFactory()

    # When an operator pauses then resumes it from the console
    operator.post(f"/dashboard/destinations/{destination.pk}/pause/")
    operator.post(f"/dashboard/destinations/{destination.pk}/resume/")

    # Then both changes are in the change log, by whom and through the console
    changes = list(ConfigChange.objects.filter(destination_id=destination.pk).order_by("id"))
    assert [(c.source, c.changes["enabled"]) for c in changes] == [
        ("console", {"old": True, "new": False}),
        ("console", {"old": False, "new": True}),
    ]
    assert {c.actor_id for c in changes} == {operator.user.pk}


def test_sending_a_test_document_shows_its_outcome(operator, monkeypatch, now):
    # Given a sender that records a failed test delivery
    destination = DestinationFactory()
    sent = log_delivery(destination, created_at=now, kind=DeliveryKind.TEST, outcome=DeliveryStatus.FAILED,
                        tries=[status(401)])
    calls = []
    monkeypatch.setattr("delivery.sending.rounds.send_test_document",
                        lambda *, destination: calls.append(destination.pk) or sent)

    # When
    response = operator.post(f"/dashboard/destinations/{destination.pk}/test/", follow=True)

    # Then the operator lands on the test delivery with the partner's answer
    assert calls == [destination.pk]
    assert response.redirect_chain[-1][0] == f"/dashboard/deliveries/{sent.pk}/"
    assert messages_of(response) == [
        "Test document failed after 1 attempt(s): HTTP 401. partner answered 401 Unauthorized"
    ]


def test_a_test_document_that_cannot_be_sent_reads_as_a_message_not_a_500(operator, monkeypatch):
    destination = DestinationFactory()

    def refuse(*, destination):
        raise RuntimeError("address refused")

    monkeypatch.setattr("delivery.sending.rounds.send_test_document", refuse)

    response = operator.post(f"/dashboard/destinations/{destination.pk}/test/", follow=True)

    assert response.status_code == 200
    assert "address refused" in messages_of(response)[0]


def test_send_the_batch_now_queues_the_task(operator, monkeypatch):
    destination = DestinationFactory()
    task = FakeTask()
    monkeypatch.setattr("delivery.tasks.send_batch_now", task, raising=False)

    response = operator.post(f"/dashboard/destinations/{destination.pk}/send-batch/", follow=True)

    assert task.calls == [(destination.pk,)]
    assert "queued" in messages_of(response)[0]


def test_send_the_batch_now_says_so_when_the_broker_is_down(operator, monkeypatch):
    # The "task not installed" branch is gone (such a deployment cannot exist); a broker
    # outage reads as the admin's and the API's message.
    destination = DestinationFactory()

    def broker_down(destination_id):
        raise KombuOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr("delivery.tasks.send_batch_now.delay", broker_down)

    response = operator.post(f"/dashboard/destinations/{destination.pk}/send-batch/", follow=True)

    assert response.status_code == 200
    assert messages_of(response) == ["The task broker is unavailable; try again shortly."]


def test_redeliver_failed_since_sends_each_failed_document_once(
    operator, send_task, now, django_capture_on_commit_callbacks
):
    # Given failed deliveries: one too old, one already redelivered, one to redeliver; and a delivered one
    destination = DestinationFactory()
    log_delivery(destination, created_at=now - dt.timedelta(days=3), outcome=DeliveryStatus.FAILED,
                 tries=[TIMEOUT])
    redelivered = log_delivery(destination, created_at=now, outcome=DeliveryStatus.FAILED, tries=[TIMEOUT])
    log_delivery(destination, created_at=now, redelivery_of=redelivered, kind=DeliveryKind.REDELIVERY)
    failed = log_delivery(destination, created_at=now, outcome=DeliveryStatus.FAILED, tries=[status(500)])
    log_delivery(destination, created_at=now)
    since = (now - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")

    # When
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(f"/dashboard/destinations/{destination.pk}/redeliver-failed/",
                                 {"since": since}, follow=True)

    # Then one redelivery of the eligible one, queued after the commit
    new = Delivery.objects.get(redelivery_of=failed)
    assert (new.kind, new.status, new.document_id, bytes(new.body)) == (
        "redelivery", "pending", failed.document_id, bytes(failed.body))
    assert send_task.calls == [(new.pk,)]
    assert messages_of(response)[0].startswith("1 failed deliveries since")


def test_redeliver_failed_since_refuses_a_time_it_cannot_read(operator, send_task):
    destination = DestinationFactory()

    response = operator.post(f"/dashboard/destinations/{destination.pk}/redeliver-failed/",
                             {"since": "yesterday"}, follow=True)

    assert "YYYY-MM-DD HH:MM" in messages_of(response)[0]
    assert send_task.calls == []


def test_redeliver_creates_a_new_delivery_and_queues_it(
    operator, send_task, now, django_capture_on_commit_callbacks
):
    failed = log_delivery(DestinationFactory(), created_at=now, outcome=DeliveryStatus.FAILED,
                          tries=[TIMEOUT])

    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(f"/dashboard/deliveries/{failed.pk}/redeliver/")

    new = Delivery.objects.get(redelivery_of=failed)
    assert response["Location"] == f"/dashboard/deliveries/{new.pk}/"
    assert send_task.calls == [(new.pk,)]


def test_redelivering_a_pending_delivery_answers_409_with_a_message(operator, send_task, now):
    pending = log_delivery(DestinationFactory(), created_at=now, outcome=DeliveryStatus.PENDING, tries=[])

    response = operator.post(f"/dashboard/deliveries/{pending.pk}/redeliver/")

    assert response.status_code == 409
    assert "still pending" in response.content.decode()
    assert not Delivery.objects.filter(redelivery_of=pending).exists()
    assert send_task.calls == []
