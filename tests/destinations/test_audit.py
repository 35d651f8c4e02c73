"""The configuration change log: who changed what, when, through the API and the admin (SPEC §5)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group, User
from django.core.serializers.json import DjangoJSONEncoder

from destinations.audit import describe_changes, record_change, snapshot, summarize
from destinations.models import ConfigChange, Destination, Mapping, Segment
from tests.dns import use_resolver
from tests.factories import DestinationFactory, MappingFactory, SegmentFactory

pytestmark = pytest.mark.django_db

API = "/api/v1/"
OLD_KEY = "old-signing-key-never-recorded"
NEW_KEY = "new-signing-key-never-recorded"
CLIENT_SECRET = "client-secret-never-recorded"
SECRETS = (OLD_KEY, NEW_KEY, CLIENT_SECRET)


@pytest.fixture(autouse=True)
def public_partner(settings):
    """partner.example.com is a public address (there is no DNS here)."""
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = False
    with use_resolver(lambda host, port: ["93.184.216.34"]):
        yield


def dumped(change: ConfigChange) -> str:
    """Everything the row holds, as a database dump would show it."""
    values = {field.attname: getattr(change, field.attname) for field in ConfigChange._meta.concrete_fields}
    return json.dumps(values, cls=DjangoJSONEncoder)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def payload(**overrides):
    return {
        "name": "Acme",
        "url": "https://partner.example.com/aam",
        "client_id": "74323",
        "user_dpid": 20914,
        "aam_destination_id": 423,
        **overrides,
    }


# --- The service -------------------------------------------------------------------


def test_a_secret_change_is_only_the_word_changed_and_an_unchanged_secret_is_not_listed():
    # Given
    destination = DestinationFactory(auth_mode="hmac", signing_key=OLD_KEY, timeout_ms=3000)
    before = snapshot(destination)

    # When
    destination.signing_key = NEW_KEY
    destination.timeout_ms = 2000
    changes = describe_changes(before=before, after=snapshot(destination))

    # Then
    assert changes == {"timeout_ms": {"old": 3000, "new": 2000}, "signing_key": "changed"}
    assert_no_secret(repr(before) + repr(changes))


def test_a_creation_lists_the_new_values_and_only_the_secrets_that_are_set():
    destination = DestinationFactory(auth_mode="hmac", signing_key=OLD_KEY)

    changes = describe_changes(before=None, after=snapshot(destination))

    assert changes["name"] == {"new": destination.name}
    assert changes["signing_key"] == "changed"
    assert "oauth_client_secret" not in changes and "new_signing_key" not in changes
    assert "updated_at" not in changes and "last_delivery_status" not in changes


def test_an_update_that_changed_nothing_records_nothing():
    destination = DestinationFactory()

    recorded = record_change(
        actor=None, source="api", action="update", instance=destination, before=snapshot(destination)
    )

    assert recorded is None
    assert not ConfigChange.objects.exists()


def test_the_summary_names_the_fields_and_marks_secrets():
    changes = {"url": {"old": "a", "new": "b"}, "signing_key": "changed"}

    assert summarize(changes) == "url, signing_key (changed)"


# --- Through the API -------------------------------------------------------------------


def test_creating_a_destination_through_the_api_records_who_when_and_its_fields(operator_client):
    # When
    response = operator_client.post(
        f"{API}destinations/", payload(auth_mode="hmac", signing_key=OLD_KEY), format="json"
    )

    # Then
    assert response.status_code == 201, response.json()
    change = ConfigChange.objects.get()
    assert (change.actor, change.actor_name) == (operator_client.user, "operator")
    assert (change.source, change.action, change.object_type) == ("api", "create", "destination")
    assert change.destination_id == response.json()["id"] and change.object_repr == "Acme"
    assert change.changes["url"] == {"new": "https://partner.example.com/aam"}
    assert change.changes["signing_key"] == "changed"
    assert_no_secret(dumped(change))


def test_an_api_update_records_only_what_changed_and_a_no_op_update_nothing(operator_client):
    # Given
    destination = DestinationFactory(auth_mode="hmac", signing_key=OLD_KEY, timeout_ms=3000)
    url = f"{API}destinations/{destination.pk}/"

    # When
    operator_client.patch(url, {"timeout_ms": 2500, "signing_key": NEW_KEY}, format="json")
    operator_client.patch(url, {"timeout_ms": 2500}, format="json")

    # Then
    change = ConfigChange.objects.get()
    assert change.action == "update"
    assert change.changes == {"timeout_ms": {"old": 3000, "new": 2500}, "signing_key": "changed"}
    assert_no_secret(dumped(change))


def test_an_api_deletion_is_recorded_and_the_record_outlives_the_destination(operator_client):
    destination = DestinationFactory(name="Gone", oauth_client_secret=CLIENT_SECRET)

    response = operator_client.delete(f"{API}destinations/{destination.pk}/")

    assert response.status_code == 204
    change = ConfigChange.objects.get()
    assert (change.action, change.object_id, change.object_repr) == ("delete", str(destination.pk), "Gone")
    assert change.destination_id is None  # the destination is gone; object_id still says which
    assert change.changes["name"] == {"old": "Gone"}
    assert change.changes["oauth_client_secret"] == "changed"
    assert_no_secret(dumped(change))


def test_mapping_changes_through_the_api_are_recorded_against_their_destination(operator_client):
    # Given
    destination = DestinationFactory()

    # When
    created = operator_client.post(
        f"{API}mappings/", {"destination": destination.pk, "segment_id": 14356}, format="json"
    )
    mapping_url = f"{API}mappings/{created.json()['id']}/"
    operator_client.patch(mapping_url, {"value": "gamers"}, format="json")
    operator_client.delete(mapping_url)

    # Then
    changes = list(ConfigChange.objects.order_by("id"))
    assert [(c.action, c.object_type, c.destination_id) for c in changes] == [
        ("create", "mapping", destination.pk),
        ("update", "mapping", destination.pk),
        ("delete", "mapping", destination.pk),
    ]
    assert changes[1].changes == {"value": {"old": "14356", "new": "gamers"}}


def test_segment_changes_through_the_api_are_recorded(operator_client):
    operator_client.post(f"{API}segments/", {"id": 77, "name": "gamers"}, format="json")
    operator_client.patch(f"{API}segments/77/", {"ttl_days": 30}, format="json")
    operator_client.delete(f"{API}segments/77/")

    changes = list(ConfigChange.objects.order_by("id"))
    assert [(c.action, c.object_type, c.object_id) for c in changes] == [
        ("create", "segment", "77"),
        ("update", "segment", "77"),
        ("delete", "segment", "77"),
    ]
    assert changes[1].changes == {"ttl_days": {"old": 120, "new": 30}}


def test_key_rotation_actions_are_recorded_without_the_keys_and_a_refused_one_is_not(operator_client):
    # Given
    destination = DestinationFactory(auth_mode="hmac", signing_key=OLD_KEY)
    base = f"{API}destinations/{destination.pk}/"

    # When
    operator_client.post(f"{base}rotate-signing-key/", {"key": NEW_KEY}, format="json")
    conflict = operator_client.post(f"{base}rotate-signing-key/", {"key": "another"}, format="json")
    operator_client.post(f"{base}finish-key-rotation/", format="json")

    # Then
    assert conflict.status_code == 409
    started, finished = ConfigChange.objects.order_by("id")
    assert started.action == "start_key_rotation"
    assert started.changes["new_signing_key"] == "changed"
    assert started.changes["key_rotation_started_at"]["old"] is None
    assert finished.action == "finish_key_rotation"
    assert finished.changes["signing_key"] == finished.changes["new_signing_key"] == "changed"
    assert_no_secret(dumped(started) + dumped(finished))


def test_a_refused_change_records_nothing(operator_client):
    response = operator_client.post(f"{API}destinations/", payload(auth_mode="hmac"), format="json")

    assert response.status_code == 400
    assert not ConfigChange.objects.exists()


# --- Through the admin -------------------------------------------------------------------


def admin_form(destination: Destination, **overrides) -> dict:
    from tests.test_admin import form_data

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
