"""`manage.py rotate_encryption_keys`: every secret under the first key, idempotent, loud when stuck."""

from __future__ import annotations

from io import StringIO

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import CommandError, call_command
from django.db import connection

from delivery.coordination import TOKEN_CACHE_PATTERN, token_cache_key, token_lock_key
from delivery.sending.tokens import get_access_token
from destinations.models import Destination
from tests.factories import DestinationFactory
from tests.token_endpoint import token_reply

pytestmark = pytest.mark.django_db

OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()
RETIRED = Fernet.generate_key().decode()  # configured nowhere any more
SECRET_COLUMNS = ("signing_key", "new_signing_key", "oauth_client_secret")


@pytest.fixture
def keys(settings):
    """Set AAMDEST_ENCRYPTION_KEYS for what follows."""

    def use(*configured: str) -> None:
        settings.AAMDEST_ENCRYPTION_KEYS = list(configured)

    use(OLD)
    return use


def raw_secrets(destination: Destination) -> tuple[str, ...]:
    with connection.cursor() as cursor:
        columns = ", ".join(SECRET_COLUMNS)
        cursor.execute(f"SELECT {columns} FROM destinations_destination WHERE id = %s", [destination.pk])
        return cursor.fetchone()


def opens(key: str, token: str | bytes) -> bool:
    try:
        Fernet(key).decrypt(token if isinstance(token, bytes) else token.encode())
    except InvalidToken:
        return False
    return True


def rotate(**options) -> str:
    out = StringIO()
    call_command("rotate_encryption_keys", stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def secret_destination(**overrides) -> Destination:
    values = {"signing_key": "sk-1", "new_signing_key": "sk-2", "oauth_client_secret": "cs-1", **overrides}
    return DestinationFactory(**values)


def test_it_re_encrypts_every_secret_under_the_first_key_and_keeps_their_values(keys, token_cache):
    # Given secrets written under the old key, then the new key put first
    destination = secret_destination()
    empty = DestinationFactory()  # no secrets: nothing to do
    keys(NEW, OLD)

    # When
    output = rotate()

    # Then
    assert all(opens(NEW, value) and not opens(OLD, value) for value in raw_secrets(destination))
    assert raw_secrets(empty) == ("", "", "")
    keys(NEW)  # the old key can go now
    reloaded = Destination.objects.get(pk=destination.pk)
    assert [getattr(reloaded, name) for name in SECRET_COLUMNS] == ["sk-1", "sk-2", "cs-1"]
    assert "stored secrets: 3 re-encrypted, 0 already under the first key" in output


def test_running_it_again_changes_nothing(keys, token_cache):
    destination = secret_destination()
    keys(NEW, OLD)
    rotate()
    after_first_run = raw_secrets(destination)

    output = rotate()

    assert raw_secrets(destination) == after_first_run
    assert "stored secrets: 0 re-encrypted, 3 already under the first key" in output


def test_it_goes_through_the_rows_in_batches(keys, token_cache):
    destinations = [secret_destination(new_signing_key="") for _ in range(5)]
    keys(NEW, OLD)

    output = rotate(batch_size=2)

    assert "stored secrets: 10 re-encrypted" in output
    assert all(opens(NEW, value) for d in destinations for value in raw_secrets(d) if value)


def test_a_secret_no_key_opens_is_reported_by_destination_left_untouched_and_fails_the_command(
    keys, token_cache
):
    # Given one destination whose signing key was written under a key since removed
    keys(RETIRED)
    lost = secret_destination(name="Lost Partner", new_signing_key="", oauth_client_secret="")
    lost_before = raw_secrets(lost)
    keys(OLD)
    fine = secret_destination()
    keys(NEW, OLD)
    errors = StringIO()

    # When
    with pytest.raises(CommandError) as failure:
        call_command("rotate_encryption_keys", stdout=StringIO(), stderr=errors)

    # Then
    assert f"destination {lost.pk} 'Lost Partner': signing_key" in errors.getvalue()
    assert "left untouched" in errors.getvalue() and "1 problem(s)" in str(failure.value)
    assert raw_secrets(lost) == lost_before
    assert all(opens(NEW, value) for value in raw_secrets(fine))


def test_cached_tokens_are_re_encrypted_in_place_and_keep_their_expiry(keys, token_cache, partner):
    # Given a token cached under the old key
    partner.script = [token_reply("tok-cached", expires_in=3600)]
    destination = DestinationFactory(
        auth_mode="oauth2", oauth_token_url=partner.url, oauth_client_id="me", oauth_client_secret="cs"
    )
    assert get_access_token(destination=destination, deadline_ms=3000) == "tok-cached"
    [key] = [k for k in token_cache.scan_iter(TOKEN_CACHE_PATTERN) if token_cache.type(k) == b"hash"]
    keys(NEW, OLD)

    # When
    output = rotate()

    # Then
    stored = token_cache.hget(key, "token")
    assert opens(NEW, stored) and not opens(OLD, stored)
    assert 3_500_000 < token_cache.pttl(key) <= 3_600_000
    keys(NEW)
    assert get_access_token(destination=destination, deadline_ms=3000) == "tok-cached"
    assert len(partner.requests) == 1  # still cached: no new token request
    assert "cached OAuth tokens: 1 re-encrypted" in output
    assert "tok-cached" not in output


def test_a_cached_token_no_key_opens_is_dropped(keys, token_cache):
    entry = token_cache_key(destination_id=9, fingerprint="abc")
    token_cache.hset(entry, mapping={"token": Fernet(RETIRED).encrypt(b"t"), "digest": "d"})
    token_cache.set(token_lock_key(entry), "owner")  # a lock is not a token
    keys(NEW, OLD)

    output = rotate()

    assert not token_cache.exists(entry)
    assert token_cache.exists(token_lock_key(entry))
    assert "0 re-encrypted, 0 already under the first key, 1 dropped" in output


def test_an_unreachable_redis_fails_the_command_after_the_database_is_done(keys, settings):
    destination = secret_destination()
    keys(NEW, OLD)
    settings.AAMDEST_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    errors = StringIO()

    with pytest.raises(CommandError):
        call_command("rotate_encryption_keys", stdout=StringIO(), stderr=errors)

    assert "Redis did not answer" in errors.getvalue()
    assert all(opens(NEW, value) for value in raw_secrets(destination))


def test_a_batch_size_below_one_is_refused(keys):
    with pytest.raises(CommandError, match="--batch-size"):
        rotate(batch_size=0)
