"""POST /api/v1/deliveries/{id}/redeliver/: the same document again, queued after commit (CONTRACT §5)."""

from __future__ import annotations

import pytest
from kombu.exceptions import OperationalError as KombuOperationalError

import delivery.tasks
from delivery.models import Delivery
from tests.delivery.logged_deliveries import make_delivery

URL = "/api/v1/deliveries/"

@pytest.fixture
def enqueued(monkeypatch) -> list[int]:
    """The delivery IDs handed to the broker (after commit)."""
    sent: list[int] = []
    monkeypatch.setattr(delivery.tasks.send_delivery_task, "delay", sent.append)
    return sent


def test_redeliver_creates_a_redelivery_of_the_same_document_and_enqueues_it(
    operator_client, enqueued, django_capture_on_commit_callbacks
):
    # Given
    original = make_delivery(status="failed", attempts=(503, 503), aam_uuids=("111", "222"))

    # When
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = operator_client.post(f"{URL}{original.pk}/redeliver/")
    enqueued_before_commit = list(enqueued)
    for callback in callbacks:
        callback()

    # Then
    assert response.status_code == 202, response.json()
    new_id = response.json()["id"]
    assert response.json() == {"id": new_id, "redelivery_of": original.pk}
    redelivery = Delivery.objects.get(pk=new_id)
    assert (redelivery.kind, redelivery.status, redelivery.document_id) == (
        "redelivery",
        "pending",
        original.document_id,
    )
    assert bytes(redelivery.body) == bytes(original.body)
    assert (enqueued_before_commit, enqueued) == ([], [new_id])
    listed = operator_client.get(URL, {"kind": "redelivery"}).json()["results"]
    assert [(item["id"], item["redelivery_of"]) for item in listed] == [(new_id, original.pk)]
    assert {item["id"] for item in operator_client.get(URL, {"aam_uuid": "222"}).json()["results"]} == {
        original.pk,
        new_id,
    }


def test_redelivering_a_pending_delivery_is_a_409_and_enqueues_nothing(
    operator_client, enqueued, django_capture_on_commit_callbacks
):
    original = make_delivery(status="pending", attempts=())

    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(f"{URL}{original.pk}/redeliver/")

    assert response.status_code == 409
    assert response.json()["detail"]
    assert Delivery.objects.count() == 1
    assert enqueued == []


def test_a_viewer_cannot_redeliver(viewer_client, enqueued):
    original = make_delivery(status="failed", attempts=(503,))

    response = viewer_client.post(f"{URL}{original.pk}/redeliver/")

    assert response.status_code == 403
    assert Delivery.objects.count() == 1


def test_a_redelivery_stands_when_the_broker_is_down(
    operator_client, monkeypatch, django_capture_on_commit_callbacks
):
    # Given
    def broker_down(delivery_id):
        raise KombuOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(delivery.tasks.send_delivery_task, "delay", broker_down)
    original = make_delivery(status="failed", attempts=(503,))

    # When
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(f"{URL}{original.pk}/redeliver/")

    # Then: recorded with a lease, so that the reaper sends it once the broker is back
    assert response.status_code == 202
    redelivery = Delivery.objects.get(pk=response.json()["id"])
    assert redelivery.status == "pending" and redelivery.lease_until is not None
