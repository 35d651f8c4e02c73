"""/api/v1/destinations/: what is refused, naming the field: ranges, choices, credentials, headers, URLs."""

from __future__ import annotations

import pytest

from destinations.models import LIMITS, Destination
from tests.destinations.payloads import URL, payload
from tests.factories import DestinationFactory

pytestmark = pytest.mark.usefixtures("dns")  # partner.example.com is public, internal.example.com private

SECRET = "s3cr3t-signing-key-value"


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
