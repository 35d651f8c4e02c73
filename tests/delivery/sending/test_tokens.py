"""OAuth 2.0 client-credentials tokens from a real local token endpoint: the request, the cache in Redis."""

from __future__ import annotations

import base64

import pytest

from delivery.sending.tokens import discard_token, get_access_token
from destinations.secrets import decrypt_secret
from tests.delivery.sending.token_calls import SECRET, cache_key
from tests.local_partner import Reply
from tests.token_endpoint import token_reply


def test_it_sends_basic_credentials_form_urlencoded_and_nothing_else(oauth_destination, token_server):
    token = get_access_token(destination=oauth_destination, deadline_ms=3000)

    assert token == "tok-1"
    (received,) = token_server.requests
    expected_pair = "aam+client:s3cr%3At%26%2F%2B+%C3%A9"
    assert received.headers["Authorization"] == "Basic " + base64.b64encode(expected_pair.encode()).decode()
    assert received.headers["Content-Type"] == "application/x-www-form-urlencoded;charset=UTF-8"
    assert received.body == b"grant_type=client_credentials&scope=segments%3Awrite"


def test_it_sends_body_credentials_as_form_fields_without_basic_auth(oauth_destination, token_server):
    oauth_destination.oauth_client_auth = "body"
    oauth_destination.oauth_scope = ""

    get_access_token(destination=oauth_destination, deadline_ms=3000)

    (received,) = token_server.requests
    assert "Authorization" not in received.headers
    assert received.body == (
        b"grant_type=client_credentials&client_id=aam+client&client_secret=s3cr%3At%26%2F%2B+%C3%A9"
    )


def test_it_caches_the_token_across_calls(oauth_destination, token_server):
    first = get_access_token(destination=oauth_destination, deadline_ms=3000)
    second = get_access_token(destination=oauth_destination, deadline_ms=3000)

    assert first == second == "tok-1"
    assert len(token_server.requests) == 1


def test_the_cache_expires_with_the_token(oauth_destination, token_cache):
    get_access_token(destination=oauth_destination, deadline_ms=3000)

    assert 3_590_000 < token_cache.pttl(cache_key(token_cache)) <= 3_600_000


@pytest.mark.parametrize(
    ("expires_in", "remaining_ms", "renewed"),
    [
        (3600, 61_000, False),  # min(60 s, 360 s) = 60 s before expiry
        (3600, 59_000, True),
        (100, 10_500, False),  # min(60 s, 10 s) = 10 s before expiry
        (100, 9_500, True),
    ],
)
def test_it_renews_the_token_when_less_than_min_60s_or_10_percent_remains(
    oauth_destination, token_server, token_cache, expires_in, remaining_ms, renewed
):
    # Given a cached token with `remaining_ms` left
    token_server.script = [token_reply(token, expires_in=expires_in) for token in ("old", "new")]
    get_access_token(destination=oauth_destination, deadline_ms=3000)
    token_cache.pexpire(cache_key(token_cache), remaining_ms)

    # When a token is needed
    token = get_access_token(destination=oauth_destination, deadline_ms=3000)

    # Then it is renewed only inside the renewal window
    assert token == ("new" if renewed else "old")
    assert len(token_server.requests) == (2 if renewed else 1)


def test_a_failed_renewal_keeps_using_the_still_valid_token(oauth_destination, token_server, token_cache):
    token_server.script = [token_reply("old"), Reply(status=503, body=b"down")]
    get_access_token(destination=oauth_destination, deadline_ms=3000)
    token_cache.pexpire(cache_key(token_cache), 30_000)

    assert get_access_token(destination=oauth_destination, deadline_ms=3000) == "old"
    assert len(token_server.requests) == 2


def test_a_token_without_expires_in_is_kept_until_discarded(oauth_destination, token_server, token_cache):
    # Given a token endpoint that gives no expires_in
    token_server.script = [token_reply("forever", expires_in=None), token_reply("next", expires_in=None)]
    assert get_access_token(destination=oauth_destination, deadline_ms=3000) == "forever"

    # Then it has no expiry and is reused
    assert token_cache.pttl(cache_key(token_cache)) == -1
    assert get_access_token(destination=oauth_destination, deadline_ms=3000) == "forever"

    # When the partner answers 401 with it
    discard_token(destination=oauth_destination, token="forever")

    # Then the next call fetches a new one
    assert get_access_token(destination=oauth_destination, deadline_ms=3000) == "next"
    assert len(token_server.requests) == 2


def test_discarding_an_old_token_keeps_a_newer_one(oauth_destination, token_server):
    token_server.script = [token_reply("first"), token_reply("second")]
    get_access_token(destination=oauth_destination, deadline_ms=3000)
    discard_token(destination=oauth_destination, token="first")
    assert get_access_token(destination=oauth_destination, deadline_ms=3000) == "second"

    # A late 401 for the first token must not throw away the second
    discard_token(destination=oauth_destination, token="first")

    assert get_access_token(destination=oauth_destination, deadline_ms=3000) == "second"
    assert len(token_server.requests) == 2


def test_new_credentials_fetch_a_new_token(oauth_destination, token_server):
    token_server.script = [token_reply("for-old-secret"), token_reply("for-new-secret")]
    get_access_token(destination=oauth_destination, deadline_ms=3000)

    oauth_destination.oauth_client_secret = "rotated-secret"

    assert get_access_token(destination=oauth_destination, deadline_ms=3000) == "for-new-secret"


def test_neither_the_secret_nor_the_token_is_in_redis_in_clear(oauth_destination, token_cache):
    token = get_access_token(destination=oauth_destination, deadline_ms=3000)

    dump = b""
    for key in token_cache.scan_iter("*"):
        kind = token_cache.type(key)
        if kind == b"hash":
            dump += b"".join(k + v for k, v in token_cache.hgetall(key).items())
        elif kind == b"string":
            dump += token_cache.get(key) or b""
        dump += key
    assert SECRET.encode() not in dump and b"s3cr" not in dump
    assert token.encode() not in dump
    assert decrypt_secret(token_cache.hget(cache_key(token_cache), "token").decode()) == token
