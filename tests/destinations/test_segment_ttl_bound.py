"""`ttl_days` is bounded to 0..3650 (CONTRACT §4): a larger value once overflowed every expiry date."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from delivery.models import Membership
from destinations.models import Segment
from tests.factories import SegmentFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("ttl_days", [3651, 2147483647, -1])
def test_a_ttl_out_of_range_is_refused_naming_the_field(operator_client, ttl_days):
    SegmentFactory(id=7, ttl_days=30)

    response = operator_client.patch("/api/v1/segments/7/", {"ttl_days": ttl_days}, format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["ttl_days"]
    assert Segment.objects.get(pk=7).ttl_days == 30


def test_the_largest_ttl_still_ingests_and_expires_in_ten_years(operator_client):
    SegmentFactory(id=7, ttl_days=30)
    assert operator_client.patch("/api/v1/segments/7/", {"ttl_days": 3650}, format="json").status_code == 200

    event = {"type": "qualification", "aam_uuid": "device-1", "segment_id": 7}
    response = operator_client.post("/api/v1/events/", [event], format="json")

    assert response.status_code == 202
    expires_at = Membership.objects.get(device_id="device-1").expires_at
    assert expires_at - timezone.now() > dt.timedelta(days=3649)


def test_the_admin_refuses_it_too(admin_client):
    SegmentFactory(id=7, ttl_days=30)

    form = {"id": 7, "name": "s", "ttl_days": 99999}

    response = admin_client.post("/admin/destinations/segment/7/change/", form)

    assert response.status_code == 200
    assert "3650" in response.content.decode()
    assert Segment.objects.get(pk=7).ttl_days == 30
