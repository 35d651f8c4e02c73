"""Where aamdest may send, through the API (CONTRACT §3): every refused form, on create and update.

Both `url` and `oauth_token_url` are checked when configured (400 naming the
field) and again at send time, where a name that now resolves to a private
address (DNS rebinding) is refused with reason `connection` (or `token` for
the token endpoint) and nothing is sent.
"""

from __future__ import annotations

import pytest

from delivery.models import Attempt
from destinations.models import Destination
from tests.destinations.payloads import URL, payload
from tests.destinations.resolver import PUBLIC
from tests.factories import DestinationFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("dns")]

FIELDS = ("url", "oauth_token_url")


def oauth_payload(**overrides) -> dict:
    """A valid OAuth destination: both of its URLs are checked."""
    oauth = {
        "auth_mode": "oauth2", "oauth_token_url": "https://auth.example.com/token", "oauth_client_id": "me",
        "oauth_client_secret": "client-secret",
    }
    return payload(**{**oauth, **overrides})


def oauth_destination() -> Destination:
    return DestinationFactory(
        url="https://partner.example.com/aam",
        auth_mode="oauth2",
        oauth_token_url="https://auth.example.com/token",
        oauth_client_id="me",
        oauth_client_secret="client-secret",
    )


def create_and_update(client, field: str, value: str):
    """Create a destination with `field` = value, then set it on an existing one.

    The update carries the client secret: a new origin needs it (CONTRACT §3).
    """
    created = client.post(URL, oauth_payload(**{field: value}), format="json")
    existing = oauth_destination()
    updated = client.patch(f"{URL}{existing.pk}/", {field: value, "oauth_client_secret": "client-secret"},
                           format="json")
    return created, updated, existing


REFUSED = [
    ("https://127.0.0.1/aam", "loopback"),
    ("https://localhost/aam", "loopback"),
    ("https://[::1]/aam", "loopback"),
    ("https://10.1.2.3/aam", "private"),
    ("https://172.16.0.1/aam", "private"),
    ("https://172.31.255.254/aam", "private"),
    ("https://192.168.1.1/aam", "private"),
    ("https://169.254.169.254/latest/meta-data/", "link-local"),
    ("https://[fe80::1]/aam", "link-local"),
    ("https://224.0.0.1/aam", "multicast"),
    ("https://[ff02::1]/aam", "multicast"),
    ("https://240.0.0.1/aam", "reserved"),
    ("https://0.0.0.0/aam", "unspecified"),
    ("https://[::]/aam", "unspecified"),
    ("https://[::ffff:127.0.0.1]/aam", "loopback"),
    ("https://2130706433/aam", "loopback"),
    ("https://0177.0.0.1/aam", "loopback"),
    ("https://0x7f000001/aam", "loopback"),
    ("https://0x7f.0.0.1/aam", "loopback"),
    ("https://127.1/aam", "loopback"),
    ("https://internal.example.com/aam", "private"),
    ("https://mixed.example.com/aam", "private"),
    ("http://partner.example.com/aam", "must start with https://"),
]


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize(("value", "why"), REFUSED)
def test_each_refused_form_answers_400_naming_the_field_on_create_and_update(
    operator_client, field, value, why
):
    # When
    created, updated, existing = create_and_update(operator_client, field, value)

    # Then
    for response in (created, updated):
        assert response.status_code == 400, response.json()
        assert list(response.json()) == [field]
        [message] = response.json()[field]
        assert message.startswith(f"{field}: ") and why in message
    assert not Destination.objects.filter(name="Acme").exists()
    existing.refresh_from_db()
    assert (existing.url, existing.oauth_token_url) == (
        "https://partner.example.com/aam",
        "https://auth.example.com/token",
    )


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", [f"https://{PUBLIC}/aam", "https://partner.example.com:8443/aam"])
def test_a_public_address_or_a_name_resolving_to_one_is_accepted(operator_client, field, value):
    created, updated, existing = create_and_update(operator_client, field, value)

    assert created.status_code == 201, created.json()
    assert updated.status_code == 200, updated.json()
    existing.refresh_from_db()
    assert getattr(existing, field) == value


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", ["https://127.0.0.1:8443/aam", "https://localhost:8443/aam", "https://[::1]/"])
def test_loopback_is_accepted_when_private_networks_are_allowed(operator_client, settings, field, value):
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = True

    created, updated, _ = create_and_update(operator_client, field, value)

    assert created.status_code == 201, created.json()
    assert updated.status_code == 200, updated.json()


def test_http_is_accepted_only_when_allowed_and_still_only_to_public_addresses(operator_client, settings):
    settings.AAMDEST_ALLOW_HTTP = True

    public, _, _ = create_and_update(operator_client, "url", "http://partner.example.com/aam")
    private = operator_client.post(URL, oauth_payload(name="Other", url="http://10.0.0.1/aam"), format="json")

    assert public.status_code == 201, public.json()
    assert private.status_code == 400 and "private" in private.json()["url"][0]


def test_a_name_that_later_resolves_to_a_private_address_is_refused_at_send_time(operator_client, dns):
    # Given a destination configured while its name pointed at a public address
    created = operator_client.post(URL, oauth_payload(auth_mode="none"), format="json")
    assert created.status_code == 201, created.json()

    # When the name is re-pointed at an internal address (DNS rebinding) and a document is sent
    dns.table["partner.example.com"] = ["10.0.0.8"]
    answer = operator_client.post(f"{URL}{created.json()['id']}/test/", format="json").json()

    # Then nothing is sent: the attempt fails with reason connection, saying why
    attempt = Attempt.objects.get()
    assert (attempt.status_code, attempt.reason) == (None, "connection")
    assert "(10.0.0.8) is a private address" in attempt.error
    assert answer["status_code"] is None and "private address" in answer["error"]


def test_a_token_endpoint_that_later_resolves_to_a_private_address_is_refused_at_send_time(
    operator_client, dns
):
    created = operator_client.post(URL, oauth_payload(), format="json")
    assert created.status_code == 201, created.json()

    dns.table["auth.example.com"] = ["127.0.0.1"]
    answer = operator_client.post(f"{URL}{created.json()['id']}/test/", format="json").json()

    attempt = Attempt.objects.get()
    assert (attempt.status_code, attempt.reason) == (None, "token")
    assert attempt.error.startswith("token endpoint failed:") and "loopback" in attempt.error
    assert "client-secret" not in attempt.error and answer["status_code"] is None
