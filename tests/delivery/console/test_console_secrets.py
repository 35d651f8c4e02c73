"""No console page shows a stored secret, whoever reads it (CONTRACT §3; issue 9, finding 1).

The destination of `tests.destinations.test_admin_secrets` (mid key rotation,
an OAuth client secret, a cached token) is read through every console page by
every role that may read the console, staff or not. None may show a secret; the
destination page says whether each is set and whether a rotation is under way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from django.test import Client

from tests.destinations.test_admin_secrets import (
    ADMIN_ROLES,
    CONSOLE_ONLY_ROLES,
    World,
    assert_no_secret,
    client_for,
    secret_world,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(db) -> Iterator[World]:
    with secret_world() as built:
        yield built

CONSOLE_PAGES: dict[str, Callable[[World], str]] = {
    "dashboard": lambda w: "/dashboard/",
    "dashboard over a week": lambda w: "/dashboard/?hours=168",
    "device search": lambda w: "/dashboard/devices/?q=nobody",
    "device": lambda w: "/dashboard/devices/device-1/",
    "destination": lambda w: f"/dashboard/destinations/{w.secret.pk}/",
    "destination without secrets": lambda w: f"/dashboard/destinations/{w.bare.pk}/",
    "destination's failed deliveries": lambda w: f"/dashboard/destinations/{w.secret.pk}/?status=failed",
    "delivery": lambda w: f"/dashboard/deliveries/{w.delivery_id}/",
}


def fact(html: str, term: str) -> str:
    """The text of the console's configuration fact `term`, tags removed."""
    found = re.search(rf"<dt>{term}</dt><dd>(.*?)</dd>", html, re.DOTALL)
    assert found, f"{term} is not on the page"
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())


@pytest.mark.parametrize("page", CONSOLE_PAGES, ids=str)
@pytest.mark.parametrize("role", [*ADMIN_ROLES, *CONSOLE_ONLY_ROLES])
def test_no_console_page_shows_a_stored_secret_to_any_reader(world, role, page):
    # Given
    client: Client = client_for(role)

    # When
    response = client.get(CONSOLE_PAGES[page](world))

    # Then
    assert response.status_code == 200
    assert_no_secret(response.content.decode())


@pytest.mark.parametrize("role", [*ADMIN_ROLES, *CONSOLE_ONLY_ROLES])
def test_the_destination_page_says_which_secrets_are_set_and_whether_a_rotation_is_under_way(world, role):
    # Given
    client = client_for(role)

    # When
    secret_html = client.get(f"/dashboard/destinations/{world.secret.pk}/").content.decode()
    bare_html = client.get(f"/dashboard/destinations/{world.bare.pk}/").content.decode()

    # Then
    assert fact(secret_html, "Signing key") == "set"
    assert fact(secret_html, "OAuth client secret") == "set"
    assert fact(secret_html, "Key rotation").startswith("under way since 2026-11-30 08:15:00 UTC")
    assert fact(bare_html, "Signing key") == "not set"
    assert fact(bare_html, "OAuth client secret") == "not set"
    assert fact(bare_html, "Key rotation") == "none"
