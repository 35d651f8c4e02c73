"""Host forms a URL parser could read otherwise, and lookups that hang while a URL is saved (CONTRACT §3)."""

from __future__ import annotations

import threading
import time

import pytest

from destinations import network
from destinations.network import AddressRefused, resolve_target, validate_url
from tests.destinations.resolver import refusal, resolver_of
from tests.dns import use_resolver


@pytest.fixture(autouse=True)
def public_only(settings):
    settings.AAMDEST_ALLOW_HTTP = False
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = False


@pytest.mark.parametrize(
    ("host", "canonical"),
    [
        ("1.2.3.0x", "1.2.3.0"),  # curl reads this as a name and resolves it itself
        ("16909060", "1.2.3.4"),
        ("0x01020304", "1.2.3.4"),
        ("01.02.03.04", "1.2.3.4"),
        ("1.2.772", "1.2.3.4"),
        ("1.2.3.4.", "1.2.3.4"),
        ("1.2.3.4.5", None),
        ("partner.example.0x1f", None),
    ],
)
def test_it_refuses_public_addresses_not_written_canonically(settings, host, canonical):
    with use_resolver(resolver_of({})):
        message = refusal(f"https://{host}/aam")

    assert "not written as a canonical IP address" in message
    if canonical:
        assert f"write it as {canonical}" in message


def test_a_legacy_spelling_is_refused_even_where_private_networks_are_allowed(settings):
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = True

    with pytest.raises(AddressRefused, match="canonical"):
        resolve_target("https://0x7f.1:8443/aam")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://93.184.216.34:0/aam", "port 0"),
        ("https://[fec0::1]/aam", "deprecated site-local address"),
        ("https://[3fff::1]/aam", "documentation address"),
        ("https://[2001:db8::1]/aam", "private address"),
        ("https://[2606:2800:220:1::1%25eth0]/aam", "zone"),
    ],
)
def test_it_refuses_port_0_and_deprecated_or_documentation_ipv6_ranges(url, why):
    with use_resolver(resolver_of({})):
        assert why in refusal(url)


def test_saving_a_url_whose_dns_hangs_answers_in_time_and_keeps_it_for_the_send_time_check(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(network, "CONFIGURATION_LOOKUP_S", 0.2)

    def hang(host: str, port: int) -> list[str]:
        release.wait(5)
        return ["10.0.0.1"]

    with use_resolver(hang):
        started = time.monotonic()
        try:
            accepted = validate_url("https://slow-dns.example.com/aam", field="url")
        finally:
            release.set()

    assert accepted == "https://slow-dns.example.com/aam"
    assert time.monotonic() - started < 1
