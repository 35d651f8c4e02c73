"""The configuration change log through the admin: recorded with the admin as actor; read-only pages."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User

from destinations.models import ConfigChange, Destination, Mapping, Segment
from tests.destinations.admin_forms import form_data
from tests.destinations.change_log import API, NEW_KEY, OLD_KEY, assert_no_secret, dumped
from tests.destinations.payloads import payload
from tests.factories import DestinationFactory, MappingFactory, SegmentFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("public_dns")]


# --- Through the admin -------------------------------------------------------------------


def admin_form(destination: Destination, **overrides) -> dict:
    return form_data(destination, **overrides)


def test_an_admin_save_with_an_inline_mapping_is_recorded_with_the_admin_as_actor(admin_client, admin_user):
    # Given
    destination = DestinationFactory(url="https://partner.example.com/aam", signing_key=OLD_KEY)
    segment = SegmentFactory(id=14356)
    data = admin_form(destination, timeout_ms=1500, signing_key=NEW_KEY)
    data.update({"mappings-TOTAL_FORMS": "1", "mappings-0-segment": segment.pk, "mappings-0-value": ""})
    data.update({"mappings-0-start_date": "2024-01-01", "mappings-0-end_date": ""})

    # When
    response = admin_client.post(f"/admin/destinations/destination/{destination.pk}/change/", data)

    # Then
    assert response.status_code == 302, response.content.decode()[:2000]
    update, created = ConfigChange.objects.order_by("id")
    assert (update.actor, update.source, update.action) == (admin_user, "admin", "update")
    assert update.changes == {"timeout_ms": {"old": 3000, "new": 1500}, "signing_key": "changed"}
    assert (created.object_type, created.action) == ("mapping", "create")
    assert created.destination_id == destination.pk
    assert_no_secret(dumped(update))


def test_admin_deletions_one_or_many_are_recorded(admin_client):
    # Given
    first, second, third = DestinationFactory(), DestinationFactory(), DestinationFactory()
    mapping = MappingFactory(destination=third)

    # When
    admin_client.post(f"/admin/destinations/destination/{first.pk}/delete/", {"post": "yes"})
    admin_client.post(
        "/admin/destinations/destination/",
        {"action": "delete_selected", "_selected_action": [second.pk], "post": "yes"},
    )
    admin_client.post(f"/admin/destinations/mapping/{mapping.pk}/delete/", {"post": "yes"})

    # Then
    assert not Destination.objects.filter(pk__in=[first.pk, second.pk]).exists()
    assert not Mapping.objects.exists()
    assert sorted(ConfigChange.objects.values_list("object_type", "object_id", "action")) == sorted(
        [
            ("destination", str(first.pk), "delete"),
            ("destination", str(second.pk), "delete"),
            ("mapping", str(mapping.pk), "delete"),
        ]
    )


def test_pause_and_resume_are_recorded_per_destination(admin_client):
    destination = DestinationFactory(enabled=True)

    for action in ("pause", "resume"):
        admin_client.post(
            "/admin/destinations/destination/", {"action": action, "_selected_action": [destination.pk]}
        )

    paused, resumed = ConfigChange.objects.order_by("id")
    assert paused.changes == {"enabled": {"old": True, "new": False}}
    assert resumed.changes == {"enabled": {"old": False, "new": True}}


def test_an_admin_segment_creation_is_recorded(admin_client):
    admin_client.post("/admin/destinations/segment/add/", {"id": 88, "name": "movers", "ttl_days": 30})

    assert Segment.objects.filter(pk=88).exists()
    change = ConfigChange.objects.get()
    assert (change.object_type, change.action) == ("segment", "create")
    assert change.changes["ttl_days"] == {"new": 30}


# --- Seeing it in the admin -------------------------------------------------------------------


def test_the_change_log_is_read_only_in_the_admin(admin_client, operator_client):
    # Given
    operator_client.post(f"{API}destinations/", payload(auth_mode="hmac", signing_key=OLD_KEY), format="json")
    change = ConfigChange.objects.get()

    # When
    listing = admin_client.get("/admin/destinations/configchange/")
    page = admin_client.get(f"/admin/destinations/configchange/{change.pk}/change/")
    add = admin_client.get("/admin/destinations/configchange/add/")
    delete = admin_client.post(f"/admin/destinations/configchange/{change.pk}/delete/", {"post": "yes"})

    # Then
    assert listing.status_code == 200 and "operator" in listing.content.decode()
    assert page.status_code == 200
    assert "signing_key" in page.content.decode() and "changed" in page.content.decode()
    assert add.status_code == 403 and delete.status_code == 403
    assert ConfigChange.objects.count() == 1
    assert_no_secret(listing.content.decode() + page.content.decode())


def test_the_destination_page_shows_its_recent_changes_and_links_to_all(admin_client, operator_client):
    # Given
    destination = DestinationFactory(timeout_ms=3000)
    other = DestinationFactory()
    operator_client.patch(f"{API}destinations/{destination.pk}/", {"timeout_ms": 2000}, format="json")
    operator_client.patch(f"{API}destinations/{other.pk}/", {"name": "Renamed-Other"}, format="json")

    # When
    page = admin_client.get(f"/admin/destinations/destination/{destination.pk}/change/").content.decode()
    every = admin_client.get(f"/admin/destinations/configchange/?destination__id__exact={destination.pk}")

    # Then
    section = page.split("Recent changes", 1)[1]
    assert "<td>operator</td>" in section and "timeout_ms" in section and "Renamed-Other" not in section
    assert f"/admin/destinations/configchange/?destination__id__exact={destination.pk}" in page
    assert every.status_code == 200
    assert [c.destination_id for c in every.context["cl"].result_list] == [destination.pk]


def test_a_viewer_staff_user_reads_the_change_log(client):
    # Given
    user = User.objects.create_user("watcher", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="viewer"))
    client.force_login(user)

    # Then
    assert client.get("/admin/destinations/configchange/").status_code == 200
