"""Secrets never follow a destination to a new origin (CONTRACT §3): a change of `url` or
`oauth_token_url` to another scheme, host or port needs the secrets in the same request."""

from __future__ import annotations

import pytest

from destinations.models import ConfigChange, Destination
from tests.destinations.admin_forms import change_url, form_data
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/destinations/"


@pytest.fixture(autouse=True)
def local_addresses(settings):
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = True  # the URLs below are checked; there is no DNS here


@pytest.fixture
def hmac_destination() -> Destination:
    return DestinationFactory(url="https://127.0.0.1:8443/aam", auth_mode="hmac", signing_key="stored-key")


@pytest.fixture
def oauth_destination() -> Destination:
    return DestinationFactory(url="https://127.0.0.1:8443/aam", auth_mode="oauth2", oauth_client_id="me",
                              oauth_client_secret="stored-secret", oauth_token_url="https://127.0.0.1:9443/token")


@pytest.mark.parametrize("new_url", ["https://127.0.0.2:8443/aam", "https://127.0.0.1:8444/aam",
                                     "http://127.0.0.1:8443/aam"])
def test_moving_url_to_another_origin_without_the_signing_key_is_refused(
    operator_client, settings, hmac_destination, new_url
):
    settings.AAMDEST_ALLOW_HTTP = True

    response = operator_client.patch(f"{URL}{hmac_destination.pk}/", {"url": new_url}, format="json")

    assert response.status_code == 400
    assert "signing_key" in response.json()
    hmac_destination.refresh_from_db()
    assert hmac_destination.url == "https://127.0.0.1:8443/aam"
    assert not ConfigChange.objects.filter(object_id=str(hmac_destination.pk)).exists()


def test_moving_url_with_the_signing_key_in_the_same_request_is_accepted(operator_client, hmac_destination):
    moved = {"url": "https://127.0.0.2/aam", "signing_key": "new-key"}

    response = operator_client.patch(f"{URL}{hmac_destination.pk}/", moved, format="json")

    assert response.status_code == 200
    change = ConfigChange.objects.get(object_id=str(hmac_destination.pk))
    assert change.changes["url"] == {"old": "https://127.0.0.1:8443/aam", "new": "https://127.0.0.2/aam"}
    assert change.changes["signing_key"] == "changed"


@pytest.mark.parametrize("new_url", ["https://127.0.0.1:8443/other/path?x=1", "https://127.0.0.1:8443/aam"])
def test_a_new_path_on_the_same_origin_needs_no_secret(operator_client, hmac_destination, new_url):
    response = operator_client.patch(f"{URL}{hmac_destination.pk}/", {"url": new_url}, format="json")

    assert response.status_code == 200


@pytest.mark.parametrize("field", ["url", "oauth_token_url"])
def test_moving_an_oauth_url_needs_the_client_secret(operator_client, oauth_destination, field):
    refused = operator_client.patch(f"{URL}{oauth_destination.pk}/", {field: "https://127.0.0.3/x"},
                                    format="json")
    accepted = operator_client.patch(
        f"{URL}{oauth_destination.pk}/", {field: "https://127.0.0.3/x", "oauth_client_secret": "s2"},
        format="json",
    )

    assert refused.status_code == 400 and "oauth_client_secret" in refused.json()
    assert accepted.status_code == 200


def test_without_stored_secrets_a_move_needs_nothing(operator_client):
    destination = DestinationFactory(url="https://127.0.0.1/aam", auth_mode="none")

    moved = {"url": "https://127.0.0.9/aam"}

    response = operator_client.patch(f"{URL}{destination.pk}/", moved, format="json")

    assert response.status_code == 200


def test_the_admin_applies_the_same_rule(admin_client, hmac_destination):
    moved = form_data(hmac_destination, url="https://127.0.0.2/aam")

    refused = admin_client.post(change_url(Destination, hmac_destination.pk), moved)
    accepted = admin_client.post(change_url(Destination, hmac_destination.pk), {**moved, "signing_key": "k2"})

    assert refused.status_code == 200
    assert "signing_key is required with a change of url" in refused.content.decode()
    assert accepted.status_code == 302
    hmac_destination.refresh_from_db()
    assert (hmac_destination.url, hmac_destination.signing_key) == ("https://127.0.0.2/aam", "k2")


def test_a_move_during_a_key_rotation_must_wait_for_its_end(operator_client, hmac_destination):
    operator_client.post(f"{URL}{hmac_destination.pk}/rotate-signing-key/", {"key": "next"}, format="json")

    response = operator_client.patch(
        f"{URL}{hmac_destination.pk}/", {"url": "https://127.0.0.2/aam", "signing_key": "x"}, format="json"
    )

    assert response.status_code == 400
    assert "finish" in str(response.json())


def test_switching_the_auth_mode_away_first_does_not_carry_the_key_to_a_new_url(
    operator_client, hmac_destination
):
    # Given a URL move attempted with the key's auth mode switched off first
    url = f"{URL}{hmac_destination.pk}/"
    assert operator_client.patch(url, {"auth_mode": "none"}, format="json").status_code == 200

    # When the URL moves to another origin without the key
    moved = operator_client.patch(url, {"url": "https://127.0.0.2/aam"}, format="json")

    # Then the stored key is still asked for, whatever the mode now
    assert moved.status_code == 400 and "signing_key" in moved.json()


def test_a_token_url_set_where_there_was_none_needs_the_client_secret(operator_client):
    destination = DestinationFactory(url="https://127.0.0.1/aam", auth_mode="hmac", signing_key="k" * 20,
                                     oauth_client_secret="stored-secret", oauth_token_url="")

    response = operator_client.patch(f"{URL}{destination.pk}/", {"oauth_token_url": "https://127.0.0.9/token"},
                                     format="json")

    assert response.status_code == 400 and "oauth_client_secret" in response.json()
