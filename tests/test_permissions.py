"""Who may do what through the API (CONTRACT §5), the role groups' migration, and outages."""

from __future__ import annotations

from unittest import mock

import pytest
from django.contrib.auth.models import Group, User
from django.db import OperationalError
from rest_framework.test import APIClient

from delivery.models import Device
from destinations.api import DestinationViewSet
from destinations.models import Destination
from tests.factories import DestinationFactory

DESTINATIONS = "/api/v1/destinations/"
READ_URLS = ["/api/v1/destinations/", "/api/v1/mappings/", "/api/v1/segments/", "/api/v1/deliveries/"]


def new_destination(name: str = "Acme") -> dict:
    return {
        "name": name,
        "url": "https://93.184.216.34/aam",
        "client_id": "1",
        "user_dpid": 20914,
        "aam_destination_id": 423,
    }


@pytest.mark.django_db
@pytest.mark.parametrize("url", READ_URLS)
def test_no_token_answers_401(url):
    response = APIClient().get(url)

    assert response.status_code == 401
    assert response.json()["detail"]
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.django_db
def test_a_wrong_token_answers_401_on_reads_and_writes():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    assert client.get(DESTINATIONS).status_code == 401
    assert client.post(DESTINATIONS, new_destination(), format="json").status_code == 401
    assert not Destination.objects.exists()


def test_an_inactive_users_token_answers_401(viewer_client):
    User.objects.filter(pk=viewer_client.user.pk).update(is_active=False)

    assert viewer_client.get(DESTINATIONS).status_code == 401


@pytest.mark.parametrize("url", READ_URLS)
def test_a_viewer_reads(viewer_client, url):
    assert viewer_client.get(url).status_code == 200


def test_a_viewer_reads_profiles(viewer_client):
    Device.objects.create(aam_uuid="42", last_seen="2024-03-01T00:00:00Z")

    assert viewer_client.get("/api/v1/profiles/42/").status_code == 200


def test_a_viewer_cannot_change_anything(viewer_client):
    # Given
    destination = DestinationFactory(auth_mode="hmac", signing_key="k")

    # When
    responses = [
        viewer_client.post(DESTINATIONS, new_destination(), format="json"),
        viewer_client.patch(f"{DESTINATIONS}{destination.pk}/", {"enabled": False}, format="json"),
        viewer_client.delete(f"{DESTINATIONS}{destination.pk}/"),
        viewer_client.post(
            f"{DESTINATIONS}{destination.pk}/rotate-signing-key/", {"key": "x"}, format="json"
        ),
        viewer_client.post("/api/v1/segments/", {"id": 1}, format="json"),
        viewer_client.post(
            "/api/v1/mappings/", {"destination": destination.pk, "segment_id": 1}, format="json"
        ),
    ]

    # Then
    assert [response.status_code for response in responses] == [403] * 6
    destination.refresh_from_db()
    assert destination.enabled is True and destination.key_rotation_started_at is None
    assert Destination.objects.count() == 1


def test_an_operator_changes_configuration(operator_client):
    created = operator_client.post(DESTINATIONS, new_destination(), format="json")
    changed = operator_client.patch(
        f"{DESTINATIONS}{created.json()['id']}/", {"enabled": False}, format="json"
    )
    deleted = operator_client.delete(f"{DESTINATIONS}{created.json()['id']}/")

    assert (created.status_code, changed.status_code, deleted.status_code) == (201, 200, 204)


def test_an_operator_reads(operator_client):
    assert operator_client.get(DESTINATIONS).status_code == 200


def test_a_plain_user_is_forbidden_to_read_and_to_write(plain_client):
    assert plain_client.get(DESTINATIONS).status_code == 403
    assert plain_client.get("/api/v1/deliveries/").status_code == 403
    assert plain_client.post(DESTINATIONS, new_destination(), format="json").status_code == 403
    assert not Destination.objects.exists()


def test_staff_read_without_model_permissions_but_do_not_write(staff_client_with_perms):
    client = staff_client_with_perms()

    assert client.get(DESTINATIONS).status_code == 200
    assert client.post(DESTINATIONS, new_destination(), format="json").status_code == 403


def test_staff_write_with_the_model_permission_of_the_method(staff_client_with_perms):
    # Given
    adder = staff_client_with_perms("destinations.add_destination")
    changer = staff_client_with_perms("destinations.change_destination")

    # When
    created = adder.post(DESTINATIONS, new_destination(), format="json")
    url = f"{DESTINATIONS}{created.json()['id']}/"
    adder_patch = adder.patch(url, {"enabled": False}, format="json")
    changer_patch = changer.patch(url, {"enabled": False}, format="json")
    changer_delete = changer.delete(url)

    # Then
    assert created.status_code == 201
    assert adder_patch.status_code == 403
    assert changer_patch.status_code == 200
    assert changer_delete.status_code == 403
    assert Destination.objects.get().enabled is False


def test_staff_run_destination_actions_with_the_change_permission(staff_client_with_perms):
    # Given
    destination = DestinationFactory(auth_mode="hmac", signing_key="k")
    url = f"{DESTINATIONS}{destination.pk}/rotate-signing-key/"

    # When
    refused = staff_client_with_perms("destinations.add_destination").post(url, {"key": "n"}, format="json")
    allowed = staff_client_with_perms("destinations.change_destination").post(
        url, {"key": "n"}, format="json"
    )

    # Then
    assert (refused.status_code, allowed.status_code) == (403, 200)


def test_staff_redeliver_with_the_add_delivery_permission(staff_client_with_perms):
    refused = staff_client_with_perms("delivery.view_delivery").post("/api/v1/deliveries/1/redeliver/")
    allowed = staff_client_with_perms("delivery.add_delivery").post("/api/v1/deliveries/1/redeliver/")

    assert refused.status_code == 403
    assert allowed.status_code == 404  # past the permission check; there is no delivery 1


def test_a_superuser_may_do_anything(admin_user_client):
    assert admin_user_client.post(DESTINATIONS, new_destination(), format="json").status_code == 201


def test_a_logged_in_admin_session_reads_the_api(client, django_user_model):
    django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(django_user_model.objects.get(username="staff"))

    assert client.get(DESTINATIONS).status_code == 200


@pytest.mark.django_db
def test_the_migration_creates_the_roles_with_their_model_permissions():
    # Given
    models = {
        "destinations": {"destination", "mapping", "segment"},
        "delivery": {
            "device",
            "partnerid",
            "membership",
            "membershipchange",
            "destinationdevice",
            "delivery",
            "deliverydevice",
            "attempt",
        },
    }

    def perms(group: str) -> set[str]:
        return {
            f"{app}.{codename}"
            for app, codename in Group.objects.get(name=group).permissions.values_list(
                "content_type__app_label", "codename"
            )
        }

    # The change log is read-only for both roles.
    read_the_change_log = {"destinations.view_configchange"}

    # Then
    expected_view = {f"{app}.view_{model}" for app, names in models.items() for model in names}
    assert perms("viewer") == expected_view | read_the_change_log
    assert perms("operator") == read_the_change_log | {
        f"{app}.{action}_{model}"
        for app, names in models.items()
        for model in names
        for action in ("add", "change", "delete", "view")
    }


def test_a_database_outage_answers_503_json_from_the_api(viewer_client):
    with mock.patch.object(DestinationViewSet, "get_queryset", side_effect=OperationalError("server closed")):
        response = viewer_client.get(DESTINATIONS)

    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert "database" in response.json()["detail"]


def test_a_database_outage_answers_503_json_outside_the_api(admin_client):
    with mock.patch(
        "django.contrib.admin.options.ModelAdmin.get_queryset", side_effect=OperationalError("down")
    ):
        response = admin_client.get("/admin/destinations/destination/")

    assert response.status_code == 503
    assert response.json()["detail"]
