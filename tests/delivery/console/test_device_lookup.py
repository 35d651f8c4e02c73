"""Finding a device in the console: by AAM UUID or partner ID; its profile and the deliveries carrying it."""

from __future__ import annotations

import datetime as dt

import pytest

from delivery.models import DeliveryStatus, Device, Membership, PartnerId
from tests.delivery.log_rows import OK, TIMEOUT, log_delivery, status
from tests.factories import DestinationFactory, SegmentFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def profiled_device(now) -> Device:
    device = Device.objects.create(aam_uuid="19393572368547369350319949416899715727", last_seen=now,
                                   regions=[6, 9])
    PartnerId.objects.create(device=device, dpid=20914, dpuuid="4250948725049857")
    Membership.objects.create(device=device, segment=SegmentFactory(id=14356, name="Runners"), is_active=True,
                              datetime=now, qualified_at=now, expires_at=now + dt.timedelta(days=120))
    Membership.objects.create(device=device, segment=SegmentFactory(id=12176), is_active=False, datetime=now)
    return device


def test_searching_an_aam_uuid_opens_the_device(viewer, profiled_device):
    response = viewer.get("/dashboard/devices/", {"q": f"  {profiled_device.aam_uuid} "})

    assert response.status_code == 302
    assert response["Location"] == f"/dashboard/devices/{profiled_device.aam_uuid}/"


def test_searching_a_partner_id_opens_its_device(viewer, profiled_device):
    response = viewer.get("/dashboard/devices/", {"q": "4250948725049857"})

    assert response["Location"] == f"/dashboard/devices/{profiled_device.aam_uuid}/"


def test_a_partner_id_shared_by_two_devices_lists_both(viewer, profiled_device, now):
    other = Device.objects.create(aam_uuid="other-device", last_seen=now)
    PartnerId.objects.create(device=other, dpid=20915, dpuuid="4250948725049857")

    response = viewer.get("/dashboard/devices/", {"q": "4250948725049857"})

    assert response.status_code == 200
    assert response.context["matches"] == [(profiled_device.aam_uuid, 20914), ("other-device", 20915)]


def test_a_search_that_matches_nothing_says_so(viewer):
    response = viewer.get("/dashboard/devices/", {"q": "no-such-id"})

    assert response.status_code == 200
    assert b"Nothing matches" in response.content


def test_the_device_page_shows_its_profile_and_every_delivery_with_the_partners_answer(
    viewer, profiled_device, now
):
    # Given two deliveries that carried the device, one failed on a timeout, and one that did not
    destination = DestinationFactory(name="Acme DSP")
    failed = log_delivery(destination, created_at=now, outcome=DeliveryStatus.FAILED,
                          tries=[TIMEOUT, TIMEOUT], aam_uuids=[profiled_device.aam_uuid])
    delivered = log_delivery(destination, created_at=now, tries=[status(500), OK],
                             aam_uuids=[profiled_device.aam_uuid, "someone-else"])
    log_delivery(destination, created_at=now, aam_uuids=["someone-else"])

    # When
    response = viewer.get(f"/dashboard/devices/{profiled_device.aam_uuid}/")

    # Then
    page = response.content.decode()
    assert response.status_code == 200
    assert "6 Dublin" in page and "9 Oregon" in page
    assert "4250948725049857" in page and "20914" in page
    assert "Runners" in page and "1 active" in page and "0 left" in page
    assert [item.pk for item in response.context["deliveries"]] == [delivered.pk, failed.pk]
    assert f'href="/dashboard/deliveries/{failed.pk}/"' in page
    assert "timeout" in page and "HTTP 200" in page and "after 2 attempts" in page


def test_an_erased_device_still_shows_the_deliveries_that_carried_it(viewer, now):
    destination = DestinationFactory()
    delivery = log_delivery(destination, created_at=now, aam_uuids=["erased-device"])

    response = viewer.get("/dashboard/devices/", {"q": "erased-device"}, follow=True)

    assert response.status_code == 200
    assert b"not in the profile store" in response.content
    assert [item.pk for item in response.context["deliveries"]] == [delivery.pk]


def test_an_unknown_device_page_answers_404(viewer):
    response = viewer.get("/dashboard/devices/never-seen/")

    assert response.status_code == 404
    assert b"Unknown device" in response.content
