"""GET /api/v1/profiles/{aam_uuid}/: what aamdest knows about a device (CONTRACT §5)."""

from __future__ import annotations

import datetime as dt

from delivery.models import Device, Membership, PartnerId
from tests.factories import SegmentFactory

AAM_UUID = "19393572368547369350319949416899715727"
SEEN = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)


def test_it_shows_the_device_its_partner_ids_and_its_segments(viewer_client, django_assert_max_num_queries):
    # Given
    device = Device.objects.create(aam_uuid=AAM_UUID, last_seen=SEEN, regions=[6, 9])
    PartnerId.objects.create(device=device, dpid=20915, dpuuid="idfa-1")
    PartnerId.objects.create(device=device, dpid=20914, dpuuid="gaid-1")
    Membership.objects.create(
        device=device,
        segment=SegmentFactory(id=14356),
        is_active=True,
        datetime=SEEN,
        qualified_at=SEEN,
        expires_at=SEEN + dt.timedelta(days=120),
    )
    Membership.objects.create(device=device, segment=SegmentFactory(id=12176), is_active=False, datetime=SEEN)

    # When
    with django_assert_max_num_queries(6):
        response = viewer_client.get(f"/api/v1/profiles/{AAM_UUID}/")

    # Then
    assert response.status_code == 200
    assert response.json() == {
        "aam_uuid": AAM_UUID,
        "last_seen": "2024-03-01T12:00:00Z",
        "regions": [6, 9],
        "partner_ids": [{"dpid": 20914, "dpuuid": "gaid-1"}, {"dpid": 20915, "dpuuid": "idfa-1"}],
        "segments": [
            {"segment_id": 12176, "status": 0, "datetime": "2024-03-01T12:00:00Z", "expires_at": None},
            {
                "segment_id": 14356,
                "status": 1,
                "datetime": "2024-03-01T12:00:00Z",
                "expires_at": "2024-06-29T12:00:00Z",
            },
        ],
    }


def test_a_device_seen_without_segments_has_empty_lists(viewer_client):
    Device.objects.create(aam_uuid="42", last_seen=SEEN)

    response = viewer_client.get("/api/v1/profiles/42/")

    assert response.status_code == 200
    body = response.json()
    assert (body["regions"], body["partner_ids"], body["segments"]) == ([], [], [])


def test_an_unknown_device_is_a_json_404_naming_it(viewer_client):
    response = viewer_client.get("/api/v1/profiles/nobody-knows/")

    assert response.status_code == 404
    assert "nobody-knows" in response.json()["detail"]


def test_a_profile_is_read_only(operator_client):
    Device.objects.create(aam_uuid="42", last_seen=SEEN)

    response = operator_client.delete("/api/v1/profiles/42/")

    assert response.status_code == 405
    assert Device.objects.filter(pk="42").exists()


def test_a_device_id_holding_a_nul_byte_is_a_400_naming_aam_uuid(viewer_client):
    # Given a path PostgreSQL could not even compare (it refuses NUL in text), found by the fuzzer
    # When
    response = viewer_client.get("/api/v1/profiles/1%00/")

    # Then
    assert response.status_code == 400
    assert "aam_uuid" in response.json()
