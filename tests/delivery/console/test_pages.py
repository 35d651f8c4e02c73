"""What the console pages show: the dashboard, a destination, a delivery; static files with DEBUG off."""

from __future__ import annotations

import datetime as dt
import html

import pytest
from django.test import Client

from delivery.models import DeliveryStatus, DestinationDevice, Device
from destinations.models import AuthMode
from tests.delivery.log_rows import TIMEOUT, log_delivery, status
from tests.factories import DestinationFactory, MappingFactory, SegmentFactory

pytestmark = pytest.mark.django_db


# --- Dashboard -----------------------------------------------------------------------------------


def test_the_dashboard_shows_each_destination_with_its_numbers_and_charts(viewer, now):
    # Given a destination with two delivered requests (3 users) and one failed on a 503
    destination = DestinationFactory(name="Acme DSP")
    log_delivery(destination, created_at=now, aam_uuids=["a", "b"])
    log_delivery(destination, created_at=now, aam_uuids=["c"])
    log_delivery(destination, created_at=now, outcome=DeliveryStatus.FAILED, tries=[status(503), status(503)])

    # When
    response = viewer.get("/dashboard/?hours=6")

    # Then
    page = response.content.decode()
    assert response.status_code == 200
    assert "Acme DSP" in page and "last 6 hours" in page
    assert "66.7%" in page  # 2 delivered of 3 finished
    assert "HTTP 503" in page
    assert page.count("<svg") == 4


def test_an_unknown_period_falls_back_to_24_hours(viewer):
    response = viewer.get("/dashboard/?hours=5000")

    assert response.context["hours"] == 24


def test_the_dashboard_says_so_when_there_is_no_destination(viewer):
    response = viewer.get("/dashboard/")

    assert b"No destinations yet" in response.content


def test_the_pending_backlog_reads_on_the_dashboard(viewer, now):
    destination = DestinationFactory()
    device = Device.objects.create(aam_uuid="waiting", last_seen=now)
    DestinationDevice.objects.create(destination=destination, device=device,
                                     pending_since=now - dt.timedelta(minutes=12))

    response = viewer.get("/dashboard/")

    assert response.context["total_pending"] == 1
    assert "oldest waits 12 min" in response.content.decode()


# --- Destination page ------------------------------------------------------------------------------


def test_the_destination_page_shows_configuration_without_secrets_and_its_mappings(viewer, now):
    # Given an HMAC destination with a key, and two mappings, one ended
    destination = DestinationFactory(name="Signed", auth_mode=AuthMode.HMAC, signing_key="very-secret-key-1")
    MappingFactory(destination=destination, segment=SegmentFactory(id=501, name="Cyclists"), value="cyc")
    MappingFactory(destination=destination, segment=SegmentFactory(id=502), start_date=dt.date(2020, 1, 1),
                   end_date=dt.date(2020, 2, 1))
    log_delivery(destination, created_at=now)

    # When
    response = viewer.get(f"/dashboard/destinations/{destination.pk}/")

    # Then the key is only said to be set
    page = response.content.decode()
    assert "very-secret-key-1" not in page
    assert "Signing key</dt><dd><span class=\"badge ok\">set</span>" in page
    assert "OAuth client secret</dt><dd><span class=\"badge\">not set</span>" in page
    assert "Cyclists" in page and "<code>cyc</code>" in page
    assert [active for _, active in response.context["mappings"]] == [True, False]
    assert response.context["deliveries"].paginator.count == 1


def test_recent_deliveries_are_paginated_and_filtered_by_status(viewer, now):
    destination = DestinationFactory()
    for minute in range(30):
        log_delivery(destination, created_at=now - dt.timedelta(minutes=minute))
    log_delivery(destination, created_at=now, outcome=DeliveryStatus.FAILED, tries=[TIMEOUT])

    second = viewer.get(f"/dashboard/destinations/{destination.pk}/", {"page": 2})
    failed = viewer.get(f"/dashboard/destinations/{destination.pk}/", {"status": "failed"})

    assert len(second.context["deliveries"].object_list) == 6
    assert [item.status for item in failed.context["deliveries"]] == ["failed"]


# --- Delivery page ---------------------------------------------------------------------------------


def test_the_delivery_page_shows_the_document_and_every_attempt(viewer, now):
    destination = DestinationFactory()
    delivery = log_delivery(destination, created_at=now, outcome=DeliveryStatus.FAILED,
                            tries=[TIMEOUT, status(503, excerpt="Service Unavailable")],
                            aam_uuids=["dev-a", "dev-b"])

    response = viewer.get(f"/dashboard/deliveries/{delivery.pk}/")

    page = html.unescape(response.content.decode())
    assert response.status_code == 200
    assert '"User_count": "2"' in page and '\n  "Users": [' in page  # indented JSON
    assert "3000 ms" in page and "no complete answer within 3000 ms" in page and "timeout" in page
    assert "partner answered 503 Service Unavailable" in page
    assert 'href="/dashboard/devices/dev-a/"' in page
    assert 'http-equiv="refresh"' not in page


def test_a_pending_delivery_page_refreshes_itself(viewer, now):
    delivery = log_delivery(DestinationFactory(), created_at=now, outcome=DeliveryStatus.PENDING, tries=[])

    response = viewer.get(f"/dashboard/deliveries/{delivery.pk}/")

    assert b'http-equiv="refresh"' in response.content
    assert b"No attempt yet" in response.content



# --- Static files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/static/admin/css/base.css", "/static/console/console.css"])
def test_static_files_are_served_with_debug_off(settings, path):
    settings.DEBUG = False

    response = Client().get(path)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/css")
