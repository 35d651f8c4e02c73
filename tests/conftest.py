"""Shared fixtures: API clients with roles, local HTTPS partners with a throwaway CA, the token cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from aamdest.celery import app as celery_app
from delivery.coordination import TOKEN_CACHE_PATTERN, token_cache_client
from partner.certificates import CertificateFiles, write_certificates
from tests.local_partner import Partner, StallingServer, start_partner


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """On SQLite, test in a file beside DATABASE_URL's, as `make run` does: WAL, and writers that wait.

    Django's default, a shared in-memory database, fails concurrent writers at once instead.
    """
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database.setdefault("TEST", {})["NAME"] = f"{database['NAME']}.test"


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return write_certificates(Path(tmp_path_factory.mktemp("pki")))


@pytest.fixture
def local_network(settings, certificates: CertificateFiles) -> CertificateFiles:
    """Let aamdest send to this machine's partners and trust the throwaway CA."""
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = True
    settings.AAMDEST_CA_BUNDLE = str(certificates.ca_file)
    return certificates


@pytest.fixture
def partner(local_network: CertificateFiles) -> Iterator[Partner]:
    running = start_partner(local_network)
    yield running
    running.stop()


@pytest.fixture
def token_cache(settings) -> Iterator[redis.Redis]:
    """The Redis holding OAuth tokens, without any (an earlier test's destination may share an id)."""
    client = token_cache_client()
    for key in client.scan_iter(TOKEN_CACHE_PATTERN):
        client.delete(key)
    yield client
    for key in client.scan_iter(TOKEN_CACHE_PATTERN):
        client.delete(key)


@pytest.fixture
def stalling_server(local_network: CertificateFiles) -> Iterator[StallingServer]:
    server = StallingServer()
    yield server
    server.stop()


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Run the tasks queued with `.delay()` in place, as a worker would, instead of through the broker."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:
    """Hash test passwords cheaply: the real hasher costs about a second a user on a busy machine."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _client_for(user: User) -> APIClient:
    token, _ = Token.objects.get_or_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    client.user = user  # type: ignore[attr-defined]
    return client


@pytest.fixture
def admin_user_client(db) -> APIClient:
    """A superuser, who may do anything."""
    return _client_for(User.objects.create_superuser("admin", "admin@example.com", "pw"))


@pytest.fixture
def operator_client(db) -> APIClient:
    user = User.objects.create_user("operator", password="pw")
    user.groups.add(Group.objects.get_or_create(name="operator")[0])
    return _client_for(user)


@pytest.fixture
def viewer_client(db) -> APIClient:
    user = User.objects.create_user("viewer", password="pw")
    user.groups.add(Group.objects.get_or_create(name="viewer")[0])
    return _client_for(user)


@pytest.fixture
def plain_client(db) -> APIClient:
    """Authenticated, but with no role: gets 403."""
    return _client_for(User.objects.create_user("nobody", password="pw"))


@pytest.fixture
def staff_client_with_perms(db):
    """Build a staff user's client holding the named model permissions ('app.codename')."""

    def make(*perms: str) -> APIClient:
        user = User.objects.create_user(f"staff{User.objects.count()}", password="pw", is_staff=True)
        for perm in perms:
            app_label, codename = perm.split(".")
            permission = Permission.objects.get(content_type__app_label=app_label, codename=codename)
            user.user_permissions.add(permission)
        return _client_for(User.objects.get(pk=user.pk))

    return make


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With AAMDEST_DATABASE_TESTS_ONLY=1 (make test's SQLite run), keep only the tests that use the database.

    That run checks `make run`'s fallback database; a test that never touches one already
    ran on PostgreSQL and would only repeat itself.
    """
    if os.environ.get("AAMDEST_DATABASE_TESTS_ONLY") != "1":
        return
    database_fixtures = {"db", "transactional_db"}  # asked for directly or through another fixture
    kept, dropped = [], []
    for item in items:
        uses_database = item.get_closest_marker("django_db") is not None or bool(
            database_fixtures & set(getattr(item, "fixturenames", ()))
        )
        (kept if uses_database else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
