"""OAuth timing (issue 10, finding 10): the token fetch is part of the attempt, in time and in blame."""

from __future__ import annotations

import datetime as dt
import socket
import time

import pytest
from django.utils import timezone

import delivery.sending.token_endpoint
from delivery.models import Attempt
from delivery.sending.rounds import send_test_document
from delivery.sending.token_endpoint import TokenError
from delivery.sending.tokens import get_access_token
from tests.delivery.sending.token_calls import CLIENT_ID, FAILED, SECRET, failure_of
from tests.factories import DestinationFactory
from tests.local_partner import Reply
from tests.token_endpoint import token_reply


def test_a_stalled_token_cache_does_not_hold_the_fetch_past_the_deadline(
    db, partner, stalling_server, settings, monkeypatch
):
    # Given a Redis that accepts connections and never answers, and a working token endpoint
    settings.AAMDEST_REDIS_URL = f"redis://127.0.0.1:{stalling_server.port}/0"
    # The /metrics counter has its own (short) deadline; this test is about the token cache's.
    monkeypatch.setattr(delivery.sending.token_endpoint, "count_token_fetch", lambda **_: None)
    partner.script = [token_reply()]
    destination = DestinationFactory(
        auth_mode="oauth2", oauth_token_url=partner.url, oauth_client_id=CLIENT_ID, oauth_client_secret=SECRET
    )

    # When a token is asked for within 600 ms
    started = time.monotonic()
    try:
        get_access_token(destination=destination, deadline_ms=600)
    except TokenError as error:
        assert str(error).startswith(FAILED)

    # Then the cache's Redis calls fit in what was left: the answer comes within the deadline
    assert time.monotonic() - started < 0.9


def test_an_attempts_time_includes_its_token_fetch(db, partner, token_cache):
    # Given a token endpoint taking 400 ms and a partner answering at once
    partner.script = [token_reply(delay_s=0.4), Reply()]
    destination = DestinationFactory(
        url=partner.url, auth_mode="oauth2", oauth_token_url=partner.url, oauth_client_id=CLIENT_ID,
        oauth_client_secret=SECRET, timeout_ms=3000,
    )

    # When a document is sent
    before, before_monotonic = timezone.now(), time.monotonic()
    delivery = send_test_document(destination=destination)

    # Then the attempt started before the token was asked for and lasted through its fetch
    attempt = Attempt.objects.get(delivery=delivery)
    token_asked_at = before + dt.timedelta(seconds=partner.requests[0].at - before_monotonic)
    assert attempt.status_code == 200
    assert before <= attempt.started_at <= token_asked_at
    assert attempt.duration_ms >= 400


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(status=500), "it answered 500 Internal Server Error"),
        (
            Reply(status=401, body=b'{"error": "invalid_client"}'),
            "it answered 401 Unauthorized (invalid_client)",
        ),
        (Reply(status=204, body=b""), "it answered 204 No Content"),
        (Reply(body=b"not json"), "the answer is not JSON: 'not json'"),
    ],
)
def test_a_token_endpoint_failure_never_blames_the_partner(oauth_destination, token_server, reply, expected):
    token_server.script = [reply]

    message = failure_of(oauth_destination)

    assert message == FAILED + expected
    assert "partner" not in message


def test_a_refused_token_endpoint_is_named_in_the_attempt(db, partner, token_cache):
    # Given a destination whose token endpoint refuses connections
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        token_url = f"https://localhost:{probe.getsockname()[1]}/token"
    destination = DestinationFactory(
        url=partner.url, auth_mode="oauth2", oauth_token_url=token_url, oauth_client_id=CLIENT_ID,
        oauth_client_secret=SECRET,
    )

    # When a document is sent
    delivery = send_test_document(destination=destination)

    # Then its attempt says the token endpoint failed, and the partner was never asked
    attempt = Attempt.objects.get(delivery=delivery)
    assert attempt.reason == "token"
    assert attempt.error.startswith(FAILED + "connection failed: ")
    assert "partner" not in attempt.error
    assert partner.requests == []
