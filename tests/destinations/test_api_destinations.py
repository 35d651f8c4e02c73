"""/api/v1/destinations/: CRUD, the defaults, unique names, read-only fields and secrets (CONTRACT §3, §5)."""

from __future__ import annotations

from unittest import mock

import pytest
from rest_framework.validators import UniqueValidator

from destinations.models import Destination
from tests.destinations.payloads import URL, payload
from tests.factories import DestinationFactory

pytestmark = pytest.mark.usefixtures("dns")  # partner.example.com is public, internal.example.com private

SECRET = "s3cr3t-signing-key-value"


SPEC_DEFAULTS = {
    "enabled": True,
    "realtime": True,
    "batch_interval_hours": None,
    "max_users_per_request": 10,
    "max_wait_ms": 1000,
    "timeout_ms": 3000,
    "max_retries": 1,
    "retry_delay_ms": 1000,
    "auth_mode": "none",
    "signing_algorithm": "sha256",
    "signing_header": "X-Signature",
    "oauth_client_auth": "basic",
    "has_signing_key": False,
    "has_oauth_client_secret": False,
    "key_rotation_started_at": None,
}


def test_it_creates_a_destination_with_the_spec_defaults(operator_client):
    # When
    response = operator_client.post(URL, payload(), format="json")

    # Then
    assert response.status_code == 201, response.json()
    body = response.json()
    assert {key: body[key] for key in SPEC_DEFAULTS} == SPEC_DEFAULTS
    assert body["client_id"] == "74323"
    assert body["created_at"] and body["updated_at"]
    assert Destination.objects.get(pk=body["id"]).name == "Acme"


def test_it_never_returns_a_secret_it_was_given(operator_client):
    # Given
    created = operator_client.post(
        URL,
        payload(
            auth_mode="oauth2",
            oauth_token_url="https://partner.example.com/token",
            oauth_client_id="me",
            oauth_client_secret=SECRET,
            signing_key=SECRET + "-hmac",
        ),
        format="json",
    )
    assert created.status_code == 201, created.json()

    # When
    pages = [created, operator_client.get(URL), operator_client.get(f"{URL}{created.json()['id']}/")]

    # Then
    for page in pages:
        assert SECRET not in page.content.decode()
        assert "signing_key" not in page.content.decode().replace("has_signing_key", "")
    detail = pages[-1].json()
    assert detail["has_signing_key"] is True
    assert detail["has_oauth_client_secret"] is True
    stored = Destination.objects.get(pk=detail["id"])
    assert (stored.signing_key, stored.oauth_client_secret) == (SECRET + "-hmac", SECRET)


def test_a_duplicate_name_is_refused_naming_name(operator_client):
    DestinationFactory(name="Acme")

    response = operator_client.post(URL, payload(name="Acme"), format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["name"]


def test_a_duplicate_name_that_races_past_the_validator_is_still_a_400_on_name(operator_client):
    # Given another request stored the name between validation and saving
    DestinationFactory(name="Acme")

    # When
    with mock.patch.object(UniqueValidator, "__call__", return_value=None):
        response = operator_client.post(URL, payload(name="Acme"), format="json")

    # Then
    assert response.status_code == 400
    assert list(response.json()) == ["name"]
    assert Destination.objects.filter(name="Acme").count() == 1


def test_read_only_fields_are_ignored_on_write(operator_client):
    destination = DestinationFactory()

    response = operator_client.patch(
        f"{URL}{destination.pk}/",
        {
            "has_signing_key": True,
            "key_rotation_started_at": "2020-01-01T00:00:00Z",
            "created_at": "2020-01-01",
        },
        format="json",
    )

    assert response.status_code == 200
    destination.refresh_from_db()
    assert destination.key_rotation_started_at is None
    assert destination.signing_key == ""


def test_the_signing_key_cannot_be_swapped_during_a_rotation(operator_client):
    # Given
    destination = DestinationFactory(auth_mode="hmac", signing_key=SECRET)
    operator_client.post(f"{URL}{destination.pk}/rotate-signing-key/", {"key": "next-key"}, format="json")

    # When
    swapped = operator_client.patch(f"{URL}{destination.pk}/", {"signing_key": "other"}, format="json")
    left = operator_client.patch(f"{URL}{destination.pk}/", {"auth_mode": "none"}, format="json")

    # Then
    assert swapped.status_code == 400 and list(swapped.json()) == ["signing_key"]
    assert left.status_code == 400 and list(left.json()) == ["auth_mode"]


def test_a_put_replaces_the_settings_and_keeps_an_omitted_secret(operator_client):
    destination = DestinationFactory(auth_mode="hmac", signing_key=SECRET)

    response = operator_client.put(
        f"{URL}{destination.pk}/", payload(name="Renamed", auth_mode="hmac", timeout_ms=500), format="json"
    )

    assert response.status_code == 200, response.json()
    destination.refresh_from_db()
    assert (destination.name, destination.timeout_ms, destination.signing_key) == ("Renamed", 500, SECRET)


def test_it_deletes_a_destination(operator_client):
    destination = DestinationFactory()

    response = operator_client.delete(f"{URL}{destination.pk}/")

    assert response.status_code == 204
    assert not Destination.objects.exists()


def test_the_list_is_paginated_and_filterable(operator_client):
    # Given
    DestinationFactory.create_batch(3)
    DestinationFactory(enabled=False)

    # When
    everything = operator_client.get(URL).json()
    paused = operator_client.get(URL, {"enabled": "false"}).json()

    # Then
    assert everything["count"] == 4 and len(everything["results"]) == 4 and everything["next"] is None
    assert [item["enabled"] for item in paused["results"]] == [False]
