"""The HTTP edge's trust: TLS failures, the address policy, pinning, slow DNS and the CA file."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from delivery.sending.http import ca_file, post
from delivery.sending.http.trust import _system_ca_file
from partner.certificates import write_certificates
from tests.delivery.sending.http_requests import request_to
from tests.dns import use_resolver
from tests.local_partner import start_partner


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
