"""/api/v1/destinations/: CRUD, defaults, ranges, credentials rules and secrets (SPEC §3, §5)."""

from __future__ import annotations

import socket
from unittest import mock

import pytest
from rest_framework.validators import UniqueValidator

from destinations.models import LIMITS, Destination
from tests.dns import use_resolver
from tests.factories import DestinationFactory

URL = "/api/v1/destinations/"
SECRET = "s3cr3t-signing-key-value"


@pytest.fixture(autouse=True)
def dns(settings):
    """No DNS here: partner.example.com is public, internal.example.com private."""
    settings.AAMDEST_ALLOW_HTTP = False
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = False
    table = {"partner.example.com": ["93.184.216.34"], "internal.example.com": ["10.0.0.7"]}

    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    with use_resolver(resolve):
        yield


def payload(**overrides):
    return {
        "name": "Acme",
        "url": "https://partner.example.com/aam",
        "client_id": "74323",
        "user_dpid": 20914,
        "aam_destination_id": 423,
        **overrides,
    }


def test_it_creates_a_destination_with_the_spec_defaults(operator_client):
    # When
    response = operator_client.post(URL, payload(), format="json")

    # Then
    assert response.status_code == 201, response.json()
    body = response.json()
    assert {
        key: body[key]
        for key in (
            "enabled",
            "realtime",
            "batch_interval_hours",
            "max_users_per_request",
            "max_wait_ms",
            "timeout_ms",
            "max_retries",
            "retry_delay_ms",
            "auth_mode",
            "signing_algorithm",
            "signing_header",
            "oauth_client_auth",
            "has_signing_key",
            "has_oauth_client_secret",
            "key_rotation_started_at",
        )
    } == {
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


@pytest.mark.parametrize("field", sorted(LIMITS))
@pytest.mark.parametrize("side", ["below", "above"])
def test_it_refuses_a_delivery_setting_out_of_range_naming_the_field(operator_client, field, side):
    # Given
    low, high = LIMITS[field]
    value = low - 1 if side == "below" else high + 1

    # When
    response = operator_client.post(URL, payload(**{field: value}), format="json")

    # Then
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert not Destination.objects.exists()


@pytest.mark.parametrize("field", sorted(LIMITS))
def test_it_accepts_both_ends_of_each_range(operator_client, field):
    low, high = LIMITS[field]
    for index, value in enumerate((low, high)):
        response = operator_client.post(URL, payload(name=f"p{index}", **{field: value}), format="json")
        assert response.status_code == 201, response.json()
        assert response.json()[field] == value


@pytest.mark.parametrize(("value", "status"), [(None, 201), (24, 201), (23, 400), (0, 400), ("daily", 400)])
def test_batch_interval_hours_is_null_or_at_least_24(operator_client, value, status):
    response = operator_client.post(URL, payload(batch_interval_hours=value), format="json")

    assert response.status_code == status
    if status == 400:
        assert list(response.json()) == ["batch_interval_hours"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("auth_mode", "basic"),
        ("signing_algorithm", "sha512"),
        ("oauth_client_auth", "header"),
        ("user_dpid", "GAID"),
        ("name", ""),
        ("client_id", ""),
    ],
)
def test_it_refuses_an_unknown_choice_or_a_bad_value_naming_the_field(operator_client, field, value):
    response = operator_client.post(URL, payload(**{field: value}), format="json")

    assert response.status_code == 400
    assert field in response.json()


def test_it_names_every_missing_required_field(operator_client):
    response = operator_client.post(URL, {}, format="json")

    assert response.status_code == 400
    assert set(response.json()) == {"name", "url", "client_id", "user_dpid", "aam_destination_id"}


def test_hmac_without_a_signing_key_is_refused_on_signing_key(operator_client):
    response = operator_client.post(URL, payload(auth_mode="hmac"), format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["signing_key"]
    assert not Destination.objects.exists()


def test_hmac_may_be_turned_on_later_with_the_key_already_stored(operator_client):
    # Given
    destination = DestinationFactory(signing_key=SECRET)

    # When
    response = operator_client.patch(f"{URL}{destination.pk}/", {"auth_mode": "hmac"}, format="json")

    # Then
    assert response.status_code == 200, response.json()
    assert response.json()["has_signing_key"] is True


def test_clearing_the_key_of_an_hmac_destination_is_refused(operator_client):
    destination = DestinationFactory(auth_mode="hmac", signing_key=SECRET)

    response = operator_client.patch(f"{URL}{destination.pk}/", {"signing_key": ""}, format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["signing_key"]
    destination.refresh_from_db()
    assert destination.signing_key == SECRET


def test_oauth2_names_each_missing_credential(operator_client):
    response = operator_client.post(URL, payload(auth_mode="oauth2", oauth_client_id="me"), format="json")

    assert response.status_code == 400
    assert set(response.json()) == {"oauth_token_url", "oauth_client_secret"}


def test_oauth2_with_every_credential_is_accepted(operator_client):
    response = operator_client.post(
        URL,
        payload(
            auth_mode="oauth2",
            oauth_token_url="https://partner.example.com/token",
            oauth_client_id="me",
            oauth_client_secret=SECRET,
            oauth_scope="segments",
            oauth_client_auth="body",
        ),
        format="json",
    )

    assert response.status_code == 201, response.json()
    assert response.json()["oauth_client_auth"] == "body"


@pytest.mark.parametrize("header", ["X Signature", "X-Sig:", "", "Content-Length", "Ünicode"])
def test_it_refuses_a_signing_header_that_is_not_a_usable_header_name(operator_client, header):
    response = operator_client.post(URL, payload(signing_header=header), format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["signing_header"]


@pytest.mark.parametrize(
    "url",
    [
        "http://partner.example.com/aam",
        "https://127.0.0.1/aam",
        "https://internal.example.com/aam",
        "https://[::ffff:10.0.0.1]/",
        "https://2130706433/",
        "not a url",
        "https://partner.example.com/donn\u00e9es",
        "https://b\u00fccher.example/aam",
    ],
)
def test_it_refuses_a_url_aamdest_may_not_send_to_on_create_and_on_update(operator_client, url):
    # When
    created = operator_client.post(URL, payload(url=url), format="json")
    destination = DestinationFactory()
    updated = operator_client.patch(f"{URL}{destination.pk}/", {"url": url}, format="json")

    # Then
    for response in (created, updated):
        assert response.status_code == 400
        assert list(response.json()) == ["url"]
        assert response.json()["url"][0].startswith("url: ")
    destination.refresh_from_db()
    assert destination.url == "https://partner.example.com/aam"


def test_it_refuses_a_private_token_url_naming_oauth_token_url(operator_client):
    response = operator_client.post(
        URL,
        payload(
            auth_mode="oauth2",
            oauth_token_url="https://internal.example.com/token",
            oauth_client_id="me",
            oauth_client_secret=SECRET,
        ),
        format="json",
    )

    assert response.status_code == 400
    assert list(response.json()) == ["oauth_token_url"]


def test_private_addresses_are_allowed_when_the_setting_says_so(operator_client, settings):
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = True

    response = operator_client.post(URL, payload(url="https://127.0.0.1:8443/aam"), format="json")

    assert response.status_code == 201, response.json()


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
