"""The configuration change log: who changed what and when, through the service and the API (CONTRACT §5)."""

from __future__ import annotations

import pytest

from destinations.audit import describe_changes, record_change, snapshot, summarize
from destinations.models import ConfigChange
from tests.destinations.change_log import API, CLIENT_SECRET, NEW_KEY, OLD_KEY, assert_no_secret, dumped
from tests.destinations.payloads import payload
from tests.factories import DestinationFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("public_dns")]


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
