"""The HTTP edge against a real local HTTPS partner: deadline, TLS, redirects, pinning, keep-alive."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest

from delivery.sending.http import BODY_CAP_BYTES, HttpRequest, ca_file, post, post_many
from delivery.sending.http.trust import _system_ca_file
from partner.certificates import write_certificates
from tests.dns import use_resolver
from tests.local_partner import Reply, start_partner


def request_to(url: str, *, timeout_ms: int = 3000, headers: dict[str, str] | None = None) -> HttpRequest:
    return HttpRequest(url=url, body=b'{"Users": []}', headers=headers or {}, timeout_ms=timeout_ms)


def count_connections(partner) -> list[object]:
    """Record every TCP connection the partner accepts."""
    accepted: list[object] = []
    original = partner.server.get_request

    def get_request():
        connection = original()
        accepted.append(connection)
        return connection

    partner.server.get_request = get_request
    return accepted


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


def test_a_stalled_tls_handshake_is_cut_at_the_deadline(stalling_server):
    result = post(request_to(stalling_server.url, timeout_ms=1000))

    assert result.reason == "timeout"
    assert 950 <= result.duration_ms <= 1500
    assert result.error == "no complete answer within 1000 ms (stalled in the TLS handshake)"


def test_a_certificate_from_an_unknown_ca_fails_with_reason_tls(local_network, tmp_path):
    # Given a partner whose certificate comes from a CA aamdest does not trust
    stranger = start_partner(write_certificates(tmp_path / "other-ca"))
    try:
        result = post(request_to(stranger.url))
    finally:
        stranger.stop()

    assert (result.status_code, result.reason) == (None, "tls")
    assert result.error.startswith("TLS handshake failed: ")
    assert stranger.requests == []


def test_a_certificate_for_another_name_fails_with_reason_tls(local_network, settings, tmp_path):
    # Given a trusted CA whose certificate names only another host
    certificates = write_certificates(tmp_path / "pki", hosts=("other.test",))
    settings.AAMDEST_CA_BUNDLE = str(certificates.ca_file)
    elsewhere = start_partner(certificates)
    try:
        result = post(request_to(elsewhere.url))
    finally:
        elsewhere.stop()

    assert result.reason == "tls"
    assert "localhost" in result.error


def test_a_refused_port_fails_with_reason_connection(local_network):
    # Given a port nobody listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    result = post(request_to(f"https://localhost:{port}/aam"))

    assert (result.status_code, result.reason) == (None, "connection")
    assert result.error.startswith("connection failed: ")


def test_a_private_address_is_not_sent_to_unless_allowed(partner, settings):
    # Given the default policy: public addresses only
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = False

    result = post(request_to(partner.url))

    assert (result.status_code, result.reason) == (None, "connection")
    assert result.error.startswith("not sent: host 'localhost' is a loopback name")
    assert partner.requests == []


def test_plain_http_is_not_sent_unless_allowed(local_network, settings):
    settings.AAMDEST_ALLOW_HTTP = False

    result = post(request_to("http://127.0.0.1:9/aam"))

    assert result.reason == "connection"
    assert "must start with https://" in result.error


def test_the_request_goes_to_the_pinned_address_with_the_host_name_for_tls(local_network, settings, tmp_path):
    # Given a partner with a certificate for a made-up name that only our resolver knows
    certificates = write_certificates(tmp_path / "pki", hosts=("partner.test",))
    settings.AAMDEST_CA_BUNDLE = str(certificates.ca_file)
    named = start_partner(certificates)
    lookups: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        lookups.append((host, port))
        return ["127.0.0.1"]

    # When posting to that name
    try:
        with use_resolver(resolve):
            result = post(request_to(f"https://partner.test:{named.port}/aam"))
    finally:
        named.stop()

    # Then it arrived (libcurl never resolved the name itself: there is no DNS here)
    assert result.is_success, result.error
    assert lookups == [("partner.test", named.port)]
    assert named.requests[0].headers["Host"] == f"partner.test:{named.port}"


def test_a_name_that_resolves_to_a_private_address_at_send_time_is_refused(partner, settings):
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = False

    with use_resolver(lambda host, port: ["10.0.0.8"]):
        result = post(request_to(f"https://partner.example.com:{partner.port}/aam"))

    assert result.reason == "connection"
    assert "(10.0.0.8) is a private address" in result.error


def test_a_resolver_slower_than_the_deadline_gives_a_timeout_in_time(local_network):
    def slow(host: str, port: int) -> list[str]:
        time.sleep(1.5)
        return ["127.0.0.1"]

    with use_resolver(slow):
        started = time.monotonic()
        result = post(request_to("https://slow.example.com/aam", timeout_ms=300))
        elapsed = time.monotonic() - started

    assert result.reason == "timeout"
    assert elapsed < 0.8
    assert result.error == "no address for the host within 300 ms"


def test_it_keeps_connections_alive_across_calls(partner):
    # Given a partner counting its TCP connections
    accepted = count_connections(partner)

    # When posting five times in a row
    results = [post(request_to(partner.url)) for _ in range(5)]

    # Then all five went over one connection
    assert all(result.is_success for result in results)
    assert len(partner.requests) == 5
    assert len(accepted) == 1


def test_a_connection_that_failed_is_not_reused(partner):
    # Given one attempt cut in the middle of its answer
    accepted = count_connections(partner)
    partner.script = [Reply(body=b"xxxxxxxx", trickle_interval_s=0.2), Reply(body=b"fine")]
    assert post(request_to(partner.url, timeout_ms=300)).reason == "timeout"

    # When posting again
    result = post(request_to(partner.url))

    # Then the next attempt succeeds on a fresh connection
    assert result.is_success
    assert result.body == b"fine"
    assert len(accepted) == 2


def test_post_many_sends_concurrently_and_keeps_the_order(partner):
    # Given a partner taking 0.5 s per answer, with a status chosen by the body
    partner.responder = lambda received: Reply(status=int(received.body), delay_s=0.5, body=received.body)
    statuses = [200, 500, 204]

    # When three requests are posted at once
    started = time.monotonic()
    results = post_many(
        [HttpRequest(url=partner.url, body=str(s).encode(), headers={}, timeout_ms=3000) for s in statuses]
    )
    elapsed = time.monotonic() - started

    # Then they overlapped, and each result is in its request's place
    assert elapsed < 1.2
    assert [result.status_code for result in results] == statuses
    assert [result.is_success for result in results] == [True, False, False]


def test_post_many_gives_each_request_its_own_deadline(partner):
    partner.responder = lambda received: Reply(delay_s=0.6 if received.body == b"slow" else 0)

    fast, slow = post_many(
        [
            HttpRequest(url=partner.url, body=b"fast", headers={}, timeout_ms=300),
            HttpRequest(url=partner.url, body=b"slow", headers={}, timeout_ms=300),
        ]
    )

    assert fast.is_success
    assert slow.reason == "timeout"


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


def test_the_ca_file_trusts_the_system_store_and_the_extra_bundle(local_network, settings, tmp_path):
    # Given an extra CA bundle
    system_ca = Path(_system_ca_file()).read_bytes()
    extra = local_network.ca_file.read_bytes()

    # Then the file libcurl reads holds both
    combined = Path(ca_file()).read_bytes()
    assert system_ca in combined
    assert extra in combined

    # And editing the extra bundle gives a new file with the new content
    edited = tmp_path / "edited-ca.pem"
    edited.write_bytes(extra + extra)
    settings.AAMDEST_CA_BUNDLE = str(edited)
    assert Path(ca_file()).read_bytes().endswith(extra + extra)


def test_without_an_extra_bundle_only_the_system_store_is_used(settings):
    settings.AAMDEST_CA_BUNDLE = None

    assert b"BEGIN CERTIFICATE" in Path(ca_file()).read_bytes()


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
