"""/api/v1/deliveries/: the delivery log, its filters, its detail; it cannot be written (CONTRACT §5)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.pagination import PageNumberPagination

from delivery.models import Delivery
from tests.delivery.logged_deliveries import document_for, make_delivery
from tests.factories import DestinationFactory

URL = "/api/v1/deliveries/"
LISTED_FIELDS = {
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


def listed_attempt(started_at: str, **fields: object) -> dict:
    """An attempt as the list shows it; `started_at` is taken from the answer itself."""
    return {"started_at": started_at, **fields}


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
    assert set(item) == LISTED_FIELDS
    assert (item["destination"], item["kind"], item["status"], item["user_count"], item["redelivery_of"]) == (
        older.destination_id,
        "realtime",
        "delivered",
        1,
        None,
    )
    first, second = (attempt["started_at"] for attempt in item["attempts"])
    assert item["attempts"] == [
        listed_attempt(first, number=1, duration_ms=10, status_code=None, reason="timeout", error="it failed",
                       response_excerpt=""),
        listed_attempt(second, number=2, duration_ms=20, status_code=200, reason=None, error="",
                       response_excerpt="OK"),
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
