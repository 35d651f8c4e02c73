"""/api/v1/deliveries/: the delivery log, its filters and redelivery (SPEC §5)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError
from rest_framework.pagination import PageNumberPagination

import delivery.tasks
from delivery.models import Attempt, Delivery, DeliveryDevice
from tests.factories import DestinationFactory

URL = "/api/v1/deliveries/"


def document_for(*aam_uuids: str) -> dict:
    users = [
        {
            "AAM_UUID": aam_uuid,
            "DataPartner_UUID": "",
            "AAM_Regions": ["9"],
            "Segments": [{"Segment_ID": "14356", "Status": "1", "DateTime": "Wed Jul 27 16:17:22 UTC 2016"}],
        }
        for aam_uuid in aam_uuids
    ]
    return {
        "ProcessTime": "Wed Jul 27 16:17:42 UTC 2016",
        "User_DPID": "20914",
        "Client_ID": "74323",
        "AAM_Destination_Id": "423",
        "User_count": str(len(users)),
        "Users": users,
    }


def make_delivery(
    *,
    destination=None,
    aam_uuids=("111",),
    status="delivered",
    kind="realtime",
    attempts=(200,),
    created_at=None,
) -> Delivery:
    """A delivery of a document holding `aam_uuids`, with one attempt per status code (None: no answer)."""
    destination = destination or DestinationFactory()
    now = timezone.now()
    made = Delivery.objects.create(
        destination=destination,
        kind=kind,
        status=status,
        user_count=len(aam_uuids),
        body=json.dumps(document_for(*aam_uuids)).encode(),
        finished_at=None if status == "pending" else now,
    )
    if created_at is not None:
        Delivery.objects.filter(pk=made.pk).update(created_at=created_at)
    DeliveryDevice.objects.bulk_create(DeliveryDevice(delivery=made, aam_uuid=a) for a in aam_uuids)
    for number, code in enumerate(attempts, start=1):
        Attempt.objects.create(
            delivery=made,
            number=number,
            started_at=now,
            duration_ms=10 * number,
            status_code=code,
            reason=None if code == 200 else ("timeout" if code is None else "status"),
            error="" if code == 200 else "it failed",
            response_excerpt="OK" if code == 200 else "",
        )
    return made


def test_the_list_is_newest_first_with_the_spec_fields_and_attempts_in_order(viewer_client):
    # Given
    now = timezone.now()
    older = make_delivery(attempts=(None, 200), created_at=now - dt.timedelta(minutes=5))
    newer = make_delivery(status="failed", attempts=(503, 503), created_at=now)

    # When
    response = viewer_client.get(URL)

    # Then
    assert response.status_code == 200
    results = response.json()["results"]
    assert [item["id"] for item in results] == [newer.pk, older.pk]
    item = results[1]
    assert set(item) == {
        "id",
        "destination",
        "kind",
        "status",
        "user_count",
        "created_at",
        "finished_at",
        "redelivery_of",
        "attempts",
    }
    assert (item["destination"], item["kind"], item["status"], item["user_count"], item["redelivery_of"]) == (
        older.destination_id,
        "realtime",
        "delivered",
        1,
        None,
    )
    assert item["attempts"] == [
        {
            "number": 1,
            "started_at": item["attempts"][0]["started_at"],
            "duration_ms": 10,
            "status_code": None,
            "reason": "timeout",
            "error": "it failed",
            "response_excerpt": "",
        },
        {
            "number": 2,
            "started_at": item["attempts"][1]["started_at"],
            "duration_ms": 20,
            "status_code": 200,
            "reason": None,
            "error": "",
            "response_excerpt": "OK",
        },
    ]
    assert "document" not in item


def test_the_list_costs_the_same_queries_however_many_deliveries(
    viewer_client, django_assert_max_num_queries
):
    # Given
    for _ in range(20):
        make_delivery(attempts=(503, 200))

    # When: count, page, prefetched attempts, plus the user's token and groups
    with django_assert_max_num_queries(6):
        response = viewer_client.get(URL)

    # Then
    assert len(response.json()["results"]) == 20


def test_the_list_is_paginated(viewer_client, monkeypatch):
    # Given
    monkeypatch.setattr(PageNumberPagination, "page_size", 2)
    for _ in range(3):
        make_delivery()

    # When
    first = viewer_client.get(URL).json()
    second = viewer_client.get(first["next"]).json()

    # Then
    assert first["count"] == 3 and len(first["results"]) == 2
    assert len(second["results"]) == 1 and second["next"] is None


def test_the_list_filters_by_destination_status_kind_and_device(viewer_client):
    # Given
    destination = DestinationFactory()
    mine = make_delivery(destination=destination, aam_uuids=("111", "222"))
    failed = make_delivery(status="failed", attempts=(503, 503), aam_uuids=("222",))
    test = make_delivery(kind="test", aam_uuids=("333",))

    def ids(**query):
        response = viewer_client.get(URL, query)
        assert response.status_code == 200, response.json()
        return {item["id"] for item in response.json()["results"]}

    # Then
    assert ids(destination=destination.pk) == {mine.pk}
    assert ids(status="failed") == {failed.pk}
    assert ids(kind="test") == {test.pk}
    assert ids(aam_uuid="222") == {mine.pk, failed.pk}
    assert ids(aam_uuid="222", status="delivered") == {mine.pk}
    assert ids(aam_uuid="999") == set()


@pytest.mark.parametrize(("name", "value"), [("status", "lost"), ("kind", "manual"), ("destination", "x")])
def test_an_unknown_filter_value_is_a_400_naming_it(viewer_client, name, value):
    response = viewer_client.get(URL, {name: value})

    assert response.status_code == 400
    assert name in response.json()


def test_a_destination_id_that_does_not_exist_filters_to_an_empty_page(viewer_client):
    response = viewer_client.get(URL, {"destination": 999_999})

    assert response.status_code == 200
    assert response.json()["results"] == []


def test_the_detail_adds_the_document_sent(viewer_client):
    delivery = make_delivery(aam_uuids=("19393572368547369350319949416899715727",))

    response = viewer_client.get(f"{URL}{delivery.pk}/")

    assert response.status_code == 200
    assert response.json()["document"] == document_for("19393572368547369350319949416899715727")
    assert response.json()["attempts"][0]["status_code"] == 200


def test_an_unknown_delivery_is_a_json_404(viewer_client):
    response = viewer_client.get(f"{URL}999999/")

    assert response.status_code == 404
    assert response.json()["detail"]


def test_deliveries_cannot_be_written(operator_client):
    delivery = make_delivery()

    responses = [
        operator_client.post(URL, {}, format="json"),
        operator_client.patch(f"{URL}{delivery.pk}/", {"status": "failed"}, format="json"),
        operator_client.delete(f"{URL}{delivery.pk}/"),
    ]

    assert [response.status_code for response in responses] == [405, 405, 405]
    assert Delivery.objects.get().status == "delivered"


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
