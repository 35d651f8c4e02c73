"""A mapping's default value follows its segment (CONTRACT §4); an explicit value stays."""

from __future__ import annotations

import pytest

from destinations.models import Mapping
from tests.factories import MappingFactory, SegmentFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/mappings/"


def admin_change(admin_client, mapping: Mapping, **fields: str):
    data = {"destination": str(mapping.destination_id), "segment": str(mapping.segment_id),
            "value": mapping.value, "start_date": mapping.start_date.isoformat(), "end_date": "", **fields}
    return admin_client.post(f"/admin/destinations/mapping/{mapping.pk}/change/", data)


def test_a_default_value_follows_a_new_segment_in_the_api(operator_client):
    mapping = MappingFactory(segment=SegmentFactory(id=10))

    response = operator_client.patch(f"{URL}{mapping.pk}/", {"segment_id": 20}, format="json")

    assert response.status_code == 200, response.json()
    mapping.refresh_from_db()
    assert (mapping.segment_id, mapping.value) == (20, "20")


@pytest.mark.parametrize("given", [{}, {"value": "gamers"}])
def test_an_explicit_value_stays_with_a_new_segment_in_the_api(operator_client, given):
    mapping = MappingFactory(segment=SegmentFactory(id=10), value="gamers")

    response = operator_client.patch(f"{URL}{mapping.pk}/", {"segment_id": 20, **given}, format="json")

    assert response.status_code == 200, response.json()
    mapping.refresh_from_db()
    assert (mapping.segment_id, mapping.value) == (20, "gamers")


def test_a_value_given_with_the_new_segment_wins_in_the_api(operator_client):
    mapping = MappingFactory(segment=SegmentFactory(id=10))

    operator_client.patch(f"{URL}{mapping.pk}/", {"segment_id": 20, "value": "10"}, format="json")

    mapping.refresh_from_db()
    assert mapping.value == "10"


def test_a_default_value_follows_a_new_segment_in_the_admin(admin_client):
    mapping = MappingFactory(segment=SegmentFactory(id=10))
    SegmentFactory(id=20)

    response = admin_change(admin_client, mapping, segment="20")

    assert response.status_code == 302
    mapping.refresh_from_db()
    assert (mapping.segment_id, mapping.value) == (20, "20")


def test_an_explicit_value_stays_with_a_new_segment_in_the_admin(admin_client):
    mapping = MappingFactory(segment=SegmentFactory(id=10), value="gamers")
    SegmentFactory(id=20)

    response = admin_change(admin_client, mapping, segment="20")

    assert response.status_code == 302
    mapping.refresh_from_db()
    assert (mapping.segment_id, mapping.value) == (20, "gamers")
