"""/api/v1/segments/: client-chosen IDs, names and TTLs (CONTRACT §4, §5)."""

from __future__ import annotations

from unittest import mock

import pytest
from rest_framework.validators import UniqueValidator

from destinations.models import Segment
from tests.factories import SegmentFactory

URL = "/api/v1/segments/"


def test_it_creates_a_segment_with_the_client_id_and_the_default_ttl(operator_client):
    response = operator_client.post(URL, {"id": 14356, "name": "Auto intenders"}, format="json")

    assert response.status_code == 201, response.json()
    assert response.json() == {"id": 14356, "name": "Auto intenders", "ttl_days": 120}
    assert Segment.objects.get(pk=14356).name == "Auto intenders"


def test_a_ttl_of_zero_means_never_expires_and_is_accepted(operator_client):
    response = operator_client.post(URL, {"id": 1, "ttl_days": 0}, format="json")

    assert response.status_code == 201
    assert response.json()["ttl_days"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "no id"}, "id"),
        ({"id": 0}, "id"),
        ({"id": -5}, "id"),
        ({"id": "abc"}, "id"),
        ({"id": 2**63}, "id"),
        ({"id": 3, "ttl_days": -1}, "ttl_days"),
        ({"id": 3, "ttl_days": "forever"}, "ttl_days"),
    ],
)
def test_bad_input_is_refused_naming_the_field(operator_client, body, field):
    response = operator_client.post(URL, body, format="json")

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert not Segment.objects.exists()


def test_a_duplicate_id_is_refused_naming_id(operator_client):
    SegmentFactory(id=42, name="first")

    response = operator_client.post(URL, {"id": 42, "name": "second"}, format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["id"]
    assert Segment.objects.get(pk=42).name == "first"


def test_a_duplicate_id_racing_past_the_validator_is_still_a_400_on_id(operator_client):
    SegmentFactory(id=42, name="first")

    with mock.patch.object(UniqueValidator, "__call__", return_value=None):
        response = operator_client.post(URL, {"id": 42, "name": "second"}, format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["id"]
    assert Segment.objects.get(pk=42).name == "first"


def test_an_update_changes_the_ttl_and_the_name_but_never_the_id(operator_client):
    # Given
    SegmentFactory(id=42)

    # When
    renamed = operator_client.put(f"{URL}42/", {"name": "renamed", "ttl_days": 1}, format="json")
    moved = operator_client.patch(f"{URL}42/", {"id": 43}, format="json")

    # Then
    assert renamed.status_code == 200, renamed.json()
    assert moved.status_code == 400 and list(moved.json()) == ["id"]
    assert list(Segment.objects.values_list("id", "name", "ttl_days")) == [(42, "renamed", 1)]


def test_segments_are_listed_by_id_and_deleted(operator_client):
    SegmentFactory(id=7)
    SegmentFactory(id=3)

    listed = operator_client.get(URL).json()
    deleted = operator_client.delete(f"{URL}3/")

    assert [item["id"] for item in listed["results"]] == [3, 7]
    assert deleted.status_code == 204
    assert list(Segment.objects.values_list("id", flat=True)) == [7]
