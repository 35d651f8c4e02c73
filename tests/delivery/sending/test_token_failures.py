"""OAuth 2.0 token failures: each says the token endpoint failed and why, in time, never the secret."""

from __future__ import annotations

import json
import re
import socket
import time

import pytest

from delivery.sending.tokens import get_access_token
from tests.delivery.sending.token_calls import FAILED, SECRET, failure_of
from tests.factories import DestinationFactory
from tests.local_partner import Reply
from tests.token_endpoint import token_reply


def test_a_stalled_token_endpoint_fails_within_the_deadline(db, token_cache, stalling_server):
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


def test_a_refused_connection_says_the_token_endpoint_failed(oauth_destination, local_network):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        oauth_destination.oauth_token_url = f"https://localhost:{probe.getsockname()[1]}/token"

    assert failure_of(oauth_destination).startswith("token endpoint failed: connection failed: ")


def test_a_private_token_url_is_refused_by_the_address_policy(oauth_destination, settings):
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = False

    message = failure_of(oauth_destination)

    assert message.startswith("token endpoint failed: not sent: host 'localhost' is a loopback name")





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
def test_each_failure_says_the_token_endpoint_failed_and_why(
    oauth_destination, token_server, reply, expected
):
    token_server.script = [reply]

    assert failure_of(oauth_destination) == FAILED + expected
    assert len(token_server.requests) == 1


def test_a_bearer_token_may_use_every_b64token_character(oauth_destination, token_server):
    token = "AZaz09-._~+/tok=="
    token_server.script = [token_reply(token)]

    assert get_access_token(destination=oauth_destination, deadline_ms=3000) == token


def test_an_endpoint_echoing_the_secret_does_not_leak_it(oauth_destination, token_server):
    answer = {"error": "invalid_client", "error_description": f"bad secret {SECRET}"}
    token_server.script = [Reply(status=401, body=json.dumps(answer).encode())]

    message = failure_of(oauth_destination)

    assert message.endswith("(invalid_client: bad secret [redacted])")  # the mark the logs use too


def test_a_destination_not_using_oauth_is_refused(db, token_cache):
    destination = DestinationFactory(auth_mode="hmac", signing_key="k")

    assert "does not use OAuth 2.0" in failure_of(destination)


def test_a_destination_missing_oauth_settings_says_which(db, token_cache):
    destination = DestinationFactory(auth_mode="oauth2", oauth_token_url="https://auth.example.com/token")

    assert failure_of(destination) == (
        "token endpoint not configured: oauth_client_id, oauth_client_secret missing"
    )
