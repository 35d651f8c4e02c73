"""/api/v1/mappings/: defaults, dates, one mapping per pair, unknown segments (CONTRACT §4, §5)."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from destinations.models import Mapping, Segment
from destinations.serializers import MappingSerializer
from tests.factories import MappingFactory, SegmentFactory

URL = "/api/v1/mappings/"


def test_it_maps_a_configured_segment_with_the_defaults(operator_client, destination):
    # Given
    SegmentFactory(id=14356, ttl_days=30)

    # When
    with time_machine.travel(dt.datetime(2024, 3, 1, 23, 30, tzinfo=dt.UTC), tick=False):
        response = operator_client.post(
            URL, {"destination": destination.pk, "segment_id": 14356}, format="json"
        )

    # Then
    assert response.status_code == 201, response.json()
    assert response.json() == {
        "id": response.json()["id"],
        "destination": destination.pk,
        "segment_id": 14356,
        "value": "14356",
        "start_date": "2024-03-01",
        "end_date": None,
    }
    assert Segment.objects.get(pk=14356).ttl_days == 30


def test_it_creates_an_unknown_segment_with_the_default_ttl(operator_client, destination):
    response = operator_client.post(
        URL, {"destination": destination.pk, "segment_id": 777, "value": "open text"}, format="json"
    )

    assert response.status_code == 201, response.json()
    assert response.json()["value"] == "open text"
    segment = Segment.objects.get(pk=777)
    assert (segment.ttl_days, segment.name) == (120, "")


def test_an_end_before_the_start_is_refused_on_end_date(operator_client, destination):
    response = operator_client.post(
        URL,
        {
            "destination": destination.pk,
            "segment_id": 5,
            "start_date": "2024-03-02",
            "end_date": "2024-03-01",
        },
        format="json",
    )

    assert response.status_code == 400
    assert list(response.json()) == ["end_date"]
    assert not Segment.objects.filter(pk=5).exists()


def test_a_one_day_mapping_is_accepted(operator_client, destination):
    response = operator_client.post(
        URL,
        {
            "destination": destination.pk,
            "segment_id": 5,
            "start_date": "2024-03-02",
            "end_date": "2024-03-02",
        },
        format="json",
    )

    assert response.status_code == 201, response.json()


def test_a_second_mapping_of_the_same_pair_is_refused_on_segment_id(operator_client, destination):
    # Given
    MappingFactory(destination=destination, segment=SegmentFactory(id=9))

    # When
    response = operator_client.post(URL, {"destination": destination.pk, "segment_id": 9}, format="json")

    # Then
    assert response.status_code == 400
    assert list(response.json()) == ["segment_id"]
    assert Mapping.objects.count() == 1


def test_nothing_is_half_stored_when_saving_the_mapping_fails(operator_client, destination, monkeypatch):
    # Given the checks are bypassed, so that the database refuses the dates itself
    monkeypatch.setattr(MappingSerializer, "validate", lambda self, attrs: {**attrs, "value": "x"})

    # When
    response = operator_client.post(
        URL,
        {
            "destination": destination.pk,
            "segment_id": 31337,
            "start_date": "2024-03-02",
            "end_date": "2024-03-01",
        },
        format="json",
    )

    # Then the answer names the field and the new segment was rolled back with the mapping
    assert response.status_code == 400
    assert list(response.json()) == ["end_date"]
    assert not Segment.objects.filter(pk=31337).exists()
    assert not Mapping.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"segment_id": 0}, "segment_id"),
        ({"segment_id": "abc"}, "segment_id"),
        ({"segment_id": 1, "destination": 999_999}, "destination"),
        ({"segment_id": 1, "value": ""}, "value"),
        ({"segment_id": 1, "start_date": "tomorrow"}, "start_date"),
        ({"destination": None}, "segment_id"),
    ],
)
def test_bad_input_is_refused_naming_the_field(operator_client, destination, body, field):
    response = operator_client.post(URL, {"destination": destination.pk, **body}, format="json")

    assert response.status_code == 400
    assert field in response.json()


def test_an_update_keeps_the_value_and_checks_the_dates_against_the_stored_start(
    operator_client, destination
):
    # Given
    mapping = MappingFactory(destination=destination, value="custom", start_date=dt.date(2024, 3, 10))

    # When
    too_early = operator_client.patch(f"{URL}{mapping.pk}/", {"end_date": "2024-03-09"}, format="json")
    ended = operator_client.patch(f"{URL}{mapping.pk}/", {"end_date": "2024-03-31"}, format="json")

    # Then
    assert too_early.status_code == 400 and list(too_early.json()) == ["end_date"]
    assert ended.status_code == 200, ended.json()
    mapping.refresh_from_db()
    assert (mapping.value, mapping.end_date) == ("custom", dt.date(2024, 3, 31))


def test_moving_a_mapping_to_another_segment_creates_it_and_keeps_one_per_pair(operator_client, destination):
    # Given
    first = MappingFactory(destination=destination, segment=SegmentFactory(id=1))
    MappingFactory(destination=destination, segment=SegmentFactory(id=2))

    # When
    clash = operator_client.patch(f"{URL}{first.pk}/", {"segment_id": 2}, format="json")
    moved = operator_client.patch(f"{URL}{first.pk}/", {"segment_id": 3}, format="json")

    # Then
    assert clash.status_code == 400 and list(clash.json()) == ["segment_id"]
    assert moved.status_code == 200, moved.json()
    assert Segment.objects.filter(pk=3).exists()


def test_the_list_filters_by_destination(operator_client, destination):
    # Given
    mine = MappingFactory(destination=destination)
    MappingFactory()

    # When
    response = operator_client.get(URL, {"destination": destination.pk})

    # Then
    assert response.status_code == 200
    assert [item["id"] for item in response.json()["results"]] == [mine.pk]


def test_an_unknown_destination_filter_is_a_400_naming_it(operator_client):
    response = operator_client.get(URL, {"destination": "abc"})

    assert response.status_code == 400
    assert "destination" in response.json()


def test_a_destination_id_that_does_not_exist_filters_to_an_empty_page(operator_client):
    response = operator_client.get(URL, {"destination": 999_999})

    assert response.status_code == 200
    assert response.json()["results"] == []


def test_it_deletes_a_mapping_and_keeps_the_segment(operator_client, destination):
    mapping = MappingFactory(destination=destination)

    response = operator_client.delete(f"{URL}{mapping.pk}/")

    assert response.status_code == 204
    assert not Mapping.objects.exists()
    assert Segment.objects.filter(pk=mapping.segment_id).exists()
