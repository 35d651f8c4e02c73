"""No admin page shows a stored secret, whoever looks (CONTRACT §3; issue 9, finding 1).

A destination in the middle of a key rotation holds a signing key, the key
being rotated in and an OAuth client secret, and a token for it is cached in
Redis. Every admin page that could render that destination (its list, change,
history and delete pages, the "start key rotation" page, the autocomplete, the
change log, the delivery log and the mappings) is opened by every role; none
may show a secret. The change pages say instead whether each secret is set and
whether a rotation is under way, since when.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client
from django.utils import timezone

from delivery.coordination import token_cache_client
from delivery.sending import tokens
from destinations.audit import record_change
from destinations.models import ChangeAction, ChangeSource, ConfigChange, Destination
from tests.delivery.log_rows import log_delivery, status
from tests.factories import DestinationFactory, MappingFactory

SIGNING_KEY = "stored-signing-key-5c1d"
NEW_SIGNING_KEY = "stored-new-signing-key-8e02"
CLIENT_SECRET = "stored-client-secret-31fa"
CACHED_TOKEN = "cached-bearer-token-a7b9"
SECRETS = (SIGNING_KEY, NEW_SIGNING_KEY, CLIENT_SECRET, CACHED_TOKEN)
ROTATION_STARTED = dt.datetime(2026, 11, 30, 8, 15, 0, tzinfo=dt.UTC)

# The admin's staff roles, each with what it holds beyond is_staff (CONTRACT §5).
STAFF_CHANGE_PERMISSIONS = (
    "destinations.view_destination", "destinations.change_destination", "destinations.view_mapping",
    "destinations.view_configchange", "delivery.view_delivery", "delivery.view_attempt",
)
ADMIN_ROLES = ("superuser", "staff_with_change", "staff_with_view_only", "viewer", "operator")
# Console users without staff status: the console only.
CONSOLE_ONLY_ROLES = ("console_viewer", "console_operator")
pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class World:
    """What the pages show: a destination with every secret, a bare one, and their log rows."""

    secret: Destination
    bare: Destination
    config_change: ConfigChange
    delivery_id: int
    mapping_id: int


def user_with_role(role: str) -> User:
    """A user of `role` (ADMIN_ROLES or CONSOLE_ONLY_ROLES), without a password to hash."""
    is_staff = role not in CONSOLE_ONLY_ROLES
    user = User.objects.create_user(role, is_staff=is_staff, is_superuser=role == "superuser")
    group = {"viewer": "viewer", "operator": "operator", "console_viewer": "viewer",
             "console_operator": "operator"}.get(role)
    if group:
        user.groups.add(Group.objects.get(name=group))  # made with its permissions by a migration
    names = {"staff_with_change": STAFF_CHANGE_PERMISSIONS,
             "staff_with_view_only": ("destinations.view_destination",)}.get(role, ())
    for name in names:
        app_label, codename = name.split(".")
        permission = Permission.objects.get(content_type__app_label=app_label, codename=codename)
        user.user_permissions.add(permission)
    return User.objects.get(pk=user.pk)  # a fresh copy: no stale permission cache


def client_for(role: str) -> Client:
    client = Client()
    client.force_login(user_with_role(role))
    return client


@contextmanager
def secret_world() -> Iterator[World]:
    """Build the World (a database is needed); remove the cached token afterwards."""
    secret = DestinationFactory(
        name="secretive partner", auth_mode="hmac", signing_key=SIGNING_KEY, new_signing_key=NEW_SIGNING_KEY,
        key_rotation_started_at=ROTATION_STARTED, oauth_token_url="https://partner.example.com/token",
        oauth_client_id="aam", oauth_client_secret=CLIENT_SECRET,
    )
    bare = DestinationFactory(name="bare partner")
    mapping = MappingFactory(destination=secret)
    delivery = log_delivery(secret, created_at=timezone.now(), tries=(status(503, excerpt="busy"),))
    change = record_change(actor=None, source=ChangeSource.ADMIN, action=ChangeAction.CREATE, instance=secret)
    # What a worker caches after a token request: a page must not reach it either.
    cache_key = tokens._cache_key(secret)
    tokens._store(token_cache_client(), cache_key, token=CACHED_TOKEN, expires_in=3600)
    yield World(
        secret=secret, bare=bare, config_change=change, delivery_id=delivery.pk, mapping_id=mapping.pk
    )
    token_cache_client().delete(cache_key)


@pytest.fixture
def world(db) -> Iterator[World]:
    with secret_world() as built:
        yield built


# --- The pages ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    name: str
    permission: str  # what a staff user needs to see it
    open: Callable[[Client, World], object]
    # Without the permission: 403, or for an action the list again (its message after a redirect).
    refused_with: tuple[int, ...] = (403,)


def _get(path: Callable[[World], str]) -> Callable[[Client, World], object]:
    return lambda client, world: client.get(path(world))


def _start_key_rotation(client: Client, world: World) -> object:
    selected = {"action": "start_key_rotation", "_selected_action": [world.secret.pk]}
    return client.post("/admin/destinations/destination/", selected)


DESTINATION = "/admin/destinations/destination/"
ADMIN_PAGES = [
    Page("destination list", "destinations.view_destination", _get(lambda w: DESTINATION)),
    Page("destination list searched", "destinations.view_destination",
         _get(lambda w: f"{DESTINATION}?q=secretive")),
    Page("destination change page", "destinations.view_destination",
         _get(lambda w: f"{DESTINATION}{w.secret.pk}/change/")),
    Page("destination history", "destinations.view_destination",
         _get(lambda w: f"{DESTINATION}{w.secret.pk}/history/")),
    Page("destination delete confirmation", "destinations.delete_destination",
         _get(lambda w: f"{DESTINATION}{w.secret.pk}/delete/")),
    Page("start key rotation", "destinations.change_destination", _start_key_rotation, (200, 302)),
    Page("destination autocomplete", "destinations.view_destination", _get(
        lambda w: "/admin/autocomplete/?app_label=destinations&model_name=mapping&field_name=destination")),
    Page("change log", "destinations.view_configchange", _get(lambda w: "/admin/destinations/configchange/")),
    Page("change log record", "destinations.view_configchange",
         _get(lambda w: f"/admin/destinations/configchange/{w.config_change.pk}/change/")),
    Page("mapping list", "destinations.view_mapping", _get(lambda w: "/admin/destinations/mapping/")),
    Page("mapping change page", "destinations.view_mapping",
         _get(lambda w: f"/admin/destinations/mapping/{w.mapping_id}/change/")),
    Page("delivery list", "delivery.view_delivery", _get(lambda w: "/admin/delivery/delivery/")),
    Page("delivery page with its attempts", "delivery.view_delivery",
         _get(lambda w: f"/admin/delivery/delivery/{w.delivery_id}/change/")),
    Page("attempt list", "delivery.view_attempt", _get(lambda w: "/admin/delivery/attempt/")),
]


def assert_no_secret(html: str) -> None:
    for secret in SECRETS:
        assert secret not in html


def shown(html: str, field: str) -> str:
    """The text of read-only field `field` on an admin change page."""
    found = re.search(rf'field-{field}\b.*?<div class="readonly">(.*?)</div>', html, re.DOTALL)
    assert found, f"{field} is not on the page"
    return found.group(1).strip()


# --- Tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", ADMIN_PAGES, ids=lambda page: page.name)
@pytest.mark.parametrize("role", ADMIN_ROLES)
def test_no_admin_page_shows_a_stored_secret_to_any_role(world, role, page):
    # Given
    client = client_for(role)
    allowed = User.objects.get(username=role).has_perm(page.permission)

    # When
    response = page.open(client, world)

    # Then
    html = response.content.decode()
    assert_no_secret(html)
    if allowed:
        assert response.status_code == 200, html[:2000]
    else:
        assert response.status_code in page.refused_with
        assert "Start a key rotation" not in html


@pytest.mark.parametrize("role", ADMIN_ROLES)
def test_the_change_page_says_which_secrets_are_set_and_whether_a_rotation_is_under_way(world, role):
    # Given
    client = client_for(role)

    # When
    secret_html = client.get(f"{DESTINATION}{world.secret.pk}/change/").content.decode()
    bare_html = client.get(f"{DESTINATION}{world.bare.pk}/change/").content.decode()

    # Then
    assert_no_secret(secret_html)
    assert shown(secret_html, "signing_key_state") == "set"
    assert shown(secret_html, "oauth_client_secret_state") == "set"
    assert shown(secret_html, "key_rotation_state") == "under way since 2026-11-30 08:15:00 UTC"
    assert shown(bare_html, "signing_key_state") == "not set"
    assert shown(bare_html, "oauth_client_secret_state") == "not set"
    assert shown(bare_html, "key_rotation_state") == "none"


@pytest.mark.parametrize("role", ["staff_with_view_only", "viewer"])
def test_a_read_only_change_page_has_no_secret_inputs(world, role):
    # Given
    client = client_for(role)

    # When
    html = client.get(f"{DESTINATION}{world.secret.pk}/change/").content.decode()

    # Then
    assert 'type="password"' not in html
    assert "field-signing_key " not in html and "field-oauth_client_secret " not in html
    assert "field-clear_signing_key" not in html


@pytest.mark.parametrize("role", ["superuser", "staff_with_change", "operator"])
def test_the_start_key_rotation_page_says_whether_a_key_is_set_and_a_rotation_under_way(world, role):
    # Given
    client = client_for(role)

    # When
    html = _start_key_rotation(client, world).content.decode()
    bare_html = client.post(
        DESTINATION, {"action": "start_key_rotation", "_selected_action": [world.bare.pk]}
    ).content.decode()

    # Then
    assert_no_secret(html)
    assert "Signing key: set." in html and "Key rotation: under way since 2026-11-30 08:15:00 UTC." in html
    assert "Signing key: not set." in bare_html and "Key rotation: none." in bare_html


@pytest.mark.parametrize("role", CONSOLE_ONLY_ROLES)
@pytest.mark.parametrize("page", ADMIN_PAGES, ids=lambda page: page.name)
def test_console_users_without_staff_status_get_no_admin_page(world, role, page):
    # When
    response = page.open(client_for(role), world)

    # Then
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert_no_secret(response.content.decode())
