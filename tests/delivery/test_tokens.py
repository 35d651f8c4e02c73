"""OAuth 2.0 client-credentials tokens against a real local token endpoint, cached in real Redis."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings

from delivery.coordination import TOKEN_CACHE_PATTERN, token_cache_client
from delivery.sending.token_endpoint import TokenError
from delivery.sending.tokens import discard_token, get_access_token
from destinations.secrets import decrypt_secret
from tests.factories import DestinationFactory
from tests.local_partner import Reply

SECRET = "s3cr:t&/+ é"
CLIENT_ID = "aam client"


def token_reply(token: str = "tok-1", *, expires_in: object = 3600, delay_s: float = 0.0, **extra) -> Reply:
    answer = {"access_token": token, "token_type": "Bearer", **extra}
    if expires_in is not None:
        answer["expires_in"] = expires_in
    headers = (("Content-Type", "application/json"),)
    return Reply(body=json.dumps(answer).encode(), delay_s=delay_s, headers=headers)


@pytest.fixture
def cache() -> redis.Redis:
    client = token_cache_client()
    for key in client.scan_iter(TOKEN_CACHE_PATTERN):
        client.delete(key)
    return client


@pytest.fixture
def token_server(partner, cache):
    partner.script = [token_reply()]
    return partner


@pytest.fixture
def destination(db, token_server):
    return DestinationFactory(
        auth_mode="oauth2",
        oauth_token_url=token_server.url,
        oauth_client_id=CLIENT_ID,
        oauth_client_secret=SECRET,
        oauth_scope="segments:write",
    )


def cache_key(cache: redis.Redis) -> bytes:
    (key,) = [key for key in cache.scan_iter(TOKEN_CACHE_PATTERN) if cache.type(key) == b"hash"]
    return key


def failure_of(destination, *, deadline_ms: int = 3000) -> str:
    with pytest.raises(TokenError) as caught:
        get_access_token(destination=destination, deadline_ms=deadline_ms)
    message = str(caught.value)
    assert SECRET not in message
    return message


def test_it_sends_basic_credentials_form_urlencoded_and_nothing_else(destination, token_server):
    token = get_access_token(destination=destination, deadline_ms=3000)

    assert token == "tok-1"
    (received,) = token_server.requests
    expected_pair = "aam+client:s3cr%3At%26%2F%2B+%C3%A9"
    assert received.headers["Authorization"] == "Basic " + base64.b64encode(expected_pair.encode()).decode()
    assert received.headers["Content-Type"] == "application/x-www-form-urlencoded;charset=UTF-8"
    assert received.body == b"grant_type=client_credentials&scope=segments%3Awrite"


def test_it_sends_body_credentials_as_form_fields_without_basic_auth(destination, token_server):
    destination.oauth_client_auth = "body"
    destination.oauth_scope = ""

    get_access_token(destination=destination, deadline_ms=3000)

    (received,) = token_server.requests
    assert "Authorization" not in received.headers
    assert received.body == (
        b"grant_type=client_credentials&client_id=aam+client&client_secret=s3cr%3At%26%2F%2B+%C3%A9"
    )


def test_it_caches_the_token_across_calls(destination, token_server):
    first = get_access_token(destination=destination, deadline_ms=3000)
    second = get_access_token(destination=destination, deadline_ms=3000)

    assert first == second == "tok-1"
    assert len(token_server.requests) == 1


def test_the_cache_expires_with_the_token(destination, cache):
    get_access_token(destination=destination, deadline_ms=3000)

    assert 3_590_000 < cache.pttl(cache_key(cache)) <= 3_600_000


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
    destination, token_server, cache, expires_in, remaining_ms, renewed
):
    # Given a cached token with `remaining_ms` left
    token_server.script = [token_reply(token, expires_in=expires_in) for token in ("old", "new")]
    get_access_token(destination=destination, deadline_ms=3000)
    cache.pexpire(cache_key(cache), remaining_ms)

    # When a token is needed
    token = get_access_token(destination=destination, deadline_ms=3000)

    # Then it is renewed only inside the renewal window
    assert token == ("new" if renewed else "old")
    assert len(token_server.requests) == (2 if renewed else 1)


def test_a_failed_renewal_keeps_using_the_still_valid_token(destination, token_server, cache):
    token_server.script = [token_reply("old"), Reply(status=503, body=b"down")]
    get_access_token(destination=destination, deadline_ms=3000)
    cache.pexpire(cache_key(cache), 30_000)

    assert get_access_token(destination=destination, deadline_ms=3000) == "old"
    assert len(token_server.requests) == 2


def test_a_token_without_expires_in_is_kept_until_discarded(destination, token_server, cache):
    # Given a token endpoint that gives no expires_in
    token_server.script = [token_reply("forever", expires_in=None), token_reply("next", expires_in=None)]
    assert get_access_token(destination=destination, deadline_ms=3000) == "forever"

    # Then it has no expiry and is reused
    assert cache.pttl(cache_key(cache)) == -1
    assert get_access_token(destination=destination, deadline_ms=3000) == "forever"

    # When the partner answers 401 with it
    discard_token(destination=destination, token="forever")

    # Then the next call fetches a new one
    assert get_access_token(destination=destination, deadline_ms=3000) == "next"
    assert len(token_server.requests) == 2


def test_discarding_an_old_token_keeps_a_newer_one(destination, token_server):
    token_server.script = [token_reply("first"), token_reply("second")]
    get_access_token(destination=destination, deadline_ms=3000)
    discard_token(destination=destination, token="first")
    assert get_access_token(destination=destination, deadline_ms=3000) == "second"

    # A late 401 for the first token must not throw away the second
    discard_token(destination=destination, token="first")

    assert get_access_token(destination=destination, deadline_ms=3000) == "second"
    assert len(token_server.requests) == 2


def test_new_credentials_fetch_a_new_token(destination, token_server):
    token_server.script = [token_reply("for-old-secret"), token_reply("for-new-secret")]
    get_access_token(destination=destination, deadline_ms=3000)

    destination.oauth_client_secret = "rotated-secret"

    assert get_access_token(destination=destination, deadline_ms=3000) == "for-new-secret"


def test_neither_the_secret_nor_the_token_is_in_redis_in_clear(destination, cache):
    token = get_access_token(destination=destination, deadline_ms=3000)

    dump = b""
    for key in cache.scan_iter("*"):
        kind = cache.type(key)
        if kind == b"hash":
            dump += b"".join(k + v for k, v in cache.hgetall(key).items())
        elif kind == b"string":
            dump += cache.get(key) or b""
        dump += key
    assert SECRET.encode() not in dump and b"s3cr" not in dump
    assert token.encode() not in dump
    assert decrypt_secret(cache.hget(cache_key(cache), "token").decode()) == token


def _need_token_in_threads(destination, count: int, barrier: threading.Barrier) -> tuple[list, list]:
    tokens: list[str] = []
    errors: list[str] = []

    def need() -> None:
        barrier.wait()
        try:
            tokens.append(get_access_token(destination=destination, deadline_ms=5000))
        except TokenError as error:
            errors.append(str(error))

    threads = [threading.Thread(target=need) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, [tokens, errors]


SUBPROCESS = """
import django, sys
django.setup()
from destinations.models import Destination
from delivery.sending.tokens import get_access_token
destination = Destination(
    pk=int(sys.argv[1]), auth_mode="oauth2", oauth_token_url=sys.argv[2],
    oauth_client_id=sys.argv[3], oauth_client_secret=sys.argv[4], oauth_scope=sys.argv[5],
)
print("ready", flush=True)
sys.stdin.readline()
print(get_access_token(destination=destination, deadline_ms=5000), flush=True)
"""


def test_ten_callers_in_two_processes_and_eight_threads_cause_one_token_request(
    destination, token_server, local_network
):
    # Given a slow token endpoint and two other processes ready to need a token
    token_server.script = [token_reply("shared", delay_s=1.0), token_reply("second")]
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "aamdest.settings",
        "AAMDEST_ALLOW_PRIVATE_NETWORKS": "1",
        "AAMDEST_CA_BUNDLE": str(local_network.ca_file),
        "AAMDEST_REDIS_URL": django_settings.AAMDEST_REDIS_URL,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    args = [str(destination.pk), destination.oauth_token_url, CLIENT_ID, SECRET, destination.oauth_scope]
    command = [sys.executable, "-c", SUBPROCESS, *args]
    workers = [
        subprocess.Popen(command, env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.stdout.readline().strip() == "ready"

    # When all ten need a token at the same moment
    barrier = threading.Barrier(9)
    threads, (tokens, errors) = _need_token_in_threads(destination, 8, barrier)
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    barrier.wait()
    for thread in threads:
        thread.join(timeout=10)
    outputs = [worker.communicate(timeout=15)[0].strip() for worker in workers]

    # Then the partner saw one token request and everyone got its token
    assert errors == []
    assert tokens == ["shared"] * 8
    assert outputs == ["shared", "shared"]
    assert len(token_server.requests) == 1


def test_callers_waiting_on_a_failing_fetch_share_its_error_without_asking_again(destination, token_server):
    token_server.script = [Reply(status=500, body=b"boom", delay_s=0.5)]
    barrier = threading.Barrier(4)

    threads, (tokens, errors) = _need_token_in_threads(destination, 3, barrier)
    barrier.wait()
    for thread in threads:
        thread.join(timeout=10)

    assert tokens == []
    assert errors == ["token endpoint failed: partner answered 500 Internal Server Error"] * 3
    assert len(token_server.requests) == 1


def test_a_stalled_token_endpoint_fails_within_the_deadline(db, cache, stalling_server):
    destination = DestinationFactory(
        auth_mode="oauth2", oauth_token_url=stalling_server.url, oauth_client_id="id",
        oauth_client_secret=SECRET,
    )

    started = time.monotonic()
    message = failure_of(destination, deadline_ms=800)

    assert time.monotonic() - started < 1.2
    # The token request gets what is left of the 800 ms once the cache was consulted.
    pattern = r"no complete answer within (7[5-9]\d|800) ms \(stalled in the TLS handshake\)"
    assert re.fullmatch(FAILED + pattern, message)


def test_a_refused_connection_says_the_token_endpoint_failed(destination, local_network):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        destination.oauth_token_url = f"https://localhost:{probe.getsockname()[1]}/token"

    assert failure_of(destination).startswith("token endpoint failed: connection failed: ")


def test_a_private_token_url_is_refused_by_the_address_policy(destination, settings):
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = False

    message = failure_of(destination)

    assert message.startswith("token endpoint failed: not sent: host 'localhost' is a loopback name")


FAILED = "token endpoint failed: "


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            Reply(status=401, body=b'{"error": "invalid_client", "error_description": "Client auth failed"}'),
            "partner answered 401 Unauthorized (invalid_client: Client auth failed)",
        ),
        (
            Reply(status=400, body=b'{"error": "invalid_scope"}'),
            "partner answered 400 Bad Request (invalid_scope)",
        ),
        (
            Reply(status=302, headers=(("Location", "https://elsewhere.example.com/token"),)),
            "partner answered 302 Found: redirect to https://elsewhere.example.com/token not followed",
        ),
        (Reply(body=b'{"token_type": "bearer"}'), "the answer has no access_token"),
        (Reply(body=b"<html>login</html>"), "the answer is not JSON: '<html>login</html>'"),
        (token_reply("t\u00e9"), "the access_token is not a valid bearer token"),
        (token_reply("tok\r\nX-Injected: 1"), "the access_token is not a valid bearer token"),
        (token_reply("tok en"), "the access_token is not a valid bearer token"),
        (token_reply("=tok"), "the access_token is not a valid bearer token"),
        (token_reply(expires_in="soon"), "expires_in 'soon' is not a positive number of seconds"),
        (token_reply(expires_in=0), "expires_in 0 is not a positive number of seconds"),
        (token_reply(token_type="mac"), "token_type 'mac' is not supported (only bearer)"),
    ],
)
def test_each_failure_says_the_token_endpoint_failed_and_why(destination, token_server, reply, expected):
    token_server.script = [reply]

    assert failure_of(destination) == FAILED + expected
    assert len(token_server.requests) == 1


def test_a_bearer_token_may_use_every_b64token_character(destination, token_server):
    token = "AZaz09-._~+/tok=="
    token_server.script = [token_reply(token)]

    assert get_access_token(destination=destination, deadline_ms=3000) == token


def test_an_endpoint_echoing_the_secret_does_not_leak_it(destination, token_server):
    answer = {"error": "invalid_client", "error_description": f"bad secret {SECRET}"}
    token_server.script = [Reply(status=401, body=json.dumps(answer).encode())]

    message = failure_of(destination)

    assert message.endswith("(invalid_client: bad secret ***)")


def test_a_destination_not_using_oauth_is_refused(db, cache):
    destination = DestinationFactory(auth_mode="hmac", signing_key="k")

    assert "does not use OAuth 2.0" in failure_of(destination)


def test_a_destination_missing_oauth_settings_says_which(db, cache):
    destination = DestinationFactory(auth_mode="oauth2", oauth_token_url="https://auth.example.com/token")

    assert failure_of(destination) == (
        "token endpoint not configured: oauth_client_id, oauth_client_secret missing"
    )
