"""The HTTP edge against a real local HTTPS partner: answers, redirects, deadlines, excerpts, bad requests."""

from __future__ import annotations

import logging
import time

import pytest

from delivery.sending.http import BODY_CAP_BYTES, HttpRequest, post, post_many
from tests.delivery.sending.http_requests import request_to
from tests.local_partner import Reply


def test_a_200_is_a_success_and_the_partner_gets_the_exact_body_and_headers(partner, settings):
    # Given a partner that answers 200
    partner.script = [Reply(status=200, body=b"accepted")]

    # When a document is posted
    result = post(request_to(partner.url, headers={"Content-Type": "application/json", "X-Trace": "1"}))

    # Then it is a success with the answer recorded
    assert result.is_success
    assert (result.status_code, result.reason, result.error) == (200, None, "")
    assert (result.response_excerpt, result.body) == ("accepted", b"accepted")
    assert 0 <= result.duration_ms < 3000
    (received,) = partner.requests
    assert received.body == b'{"Users": []}'
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["X-Trace"] == "1"
    assert received.headers["User-Agent"] == f"aamdest/{settings.VERSION}"
    assert "Expect" not in received.headers


def test_it_keeps_a_user_agent_the_caller_gave(partner):
    post(request_to(partner.url, headers={"user-agent": "custom/2"}))

    assert partner.requests[0].headers["user-agent"] == "custom/2"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (204, "partner answered 204 No Content"),
        (201, "partner answered 201 Created"),
        (500, "partner answered 500 Internal Server Error"),
        (403, "partner answered 403 Forbidden"),
    ],
)
def test_any_status_but_200_is_a_failure_with_its_code_and_excerpt(partner, status, error):
    partner.script = [Reply(status=status, body=b"" if status == 204 else b"nope: bad signature")]

    result = post(request_to(partner.url))

    assert not result.is_success
    assert (result.status_code, result.reason, result.error) == (status, "status", error)
    assert result.response_excerpt == ("" if status == 204 else "nope: bad signature")


def test_a_redirect_is_a_failure_and_is_not_followed(partner):
    # Given a partner redirecting to itself
    partner.script = [Reply(status=302, body=b"moved", headers=(("Location", partner.url + "/elsewhere"),))]

    # When posting
    result = post(request_to(partner.url))

    # Then the redirect is reported and never followed
    assert (result.status_code, result.reason) == (302, "status")
    assert result.error == f"partner answered 302 Found: redirect to {partner.url}/elsewhere not followed"
    time.sleep(0.2)
    assert len(partner.requests) == 1


def test_a_partner_trickling_its_answer_is_cut_at_the_deadline(partner):
    # Given a partner sending its body one byte every 400 ms
    partner.script = [Reply(body=b"x" * 50, trickle_interval_s=0.4)]

    # When posting with a 3000 ms deadline
    result = post(request_to(partner.url, timeout_ms=3000))

    # Then the attempt ends at the deadline, not at the end of the body
    assert 2900 <= result.duration_ms <= 3600
    assert result.reason == "timeout"
    assert not result.is_success
    assert result.error.startswith("no complete answer within 3000 ms")
    assert 0 < len(result.body) < 50


def test_an_answer_delayed_past_the_deadline_times_out(partner):
    partner.script = [Reply(delay_s=3.5)]

    result = post(request_to(partner.url, timeout_ms=3000))

    assert result.reason == "timeout"
    assert result.status_code is None
    assert 2900 <= result.duration_ms <= 3400
    assert result.error == "no complete answer within 3000 ms (waiting for the status line)"


def test_the_body_is_capped_and_the_excerpt_is_short(partner):
    partner.script = [Reply(status=500, body=b"e" * (BODY_CAP_BYTES + 5000))]

    result = post(request_to(partner.url))

    assert len(result.body) == BODY_CAP_BYTES
    assert result.response_excerpt == "e" * 1000


def test_a_body_that_is_not_utf8_gives_a_readable_excerpt(partner):
    partner.script = [Reply(status=400, body=b"bad \xff\xfe input")]

    result = post(request_to(partner.url))

    assert result.response_excerpt == "bad \ufffd\ufffd input"


def test_credentials_never_reach_the_log(partner, caplog):
    caplog.set_level(logging.DEBUG, logger="delivery.sending.http")
    headers = {"Authorization": "Bearer token-abc123", "X-Signature": "c2lnbmF0dXJlLXNlY3JldA=="}

    post(request_to(partner.url, headers=headers))

    assert caplog.records, "the exchange is logged at debug level"
    assert "token-abc123" not in caplog.text
    assert "c2lnbmF0dXJlLXNlY3JldA==" not in caplog.text


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"timeout_ms": 0}, "timeout_ms must be a positive"),
        ({"method": "PO ST"}, "is not an HTTP method"),
        ({"headers": {"X-A": "1\r\nX-Injected: 1"}}, "line break"),
        ({"headers": {"Bad Name": "1"}}, "invalid name"),
    ],
)
def test_a_malformed_request_is_refused_with_a_clear_message(changes, message):
    fields = {"url": "https://partner.example.com/aam", "body": b"", "headers": {}, "timeout_ms": 3000}

    with pytest.raises(ValueError, match=message):
        HttpRequest(**(fields | changes))


def test_a_request_libcurl_cannot_take_fails_alone_without_its_header_value(partner):
    bad = request_to(partner.url, headers={"Authorization": "Bearer t\u00e9-secret"})
    good = request_to(partner.url)

    bad_result, good_result = post_many([bad, good])

    assert (bad_result.status_code, bad_result.reason) == (None, "connection")
    assert bad_result.error.startswith("not sent: the request could not be built: ")
    assert "secret" not in bad_result.error
    assert good_result.is_success
    assert len(partner.requests) == 1
    # The thread's pool is still usable afterwards.
    assert post(request_to(partner.url)).is_success
