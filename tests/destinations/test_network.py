"""Where aamdest may send: configuration-time URL checks and send-time address pinning."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from destinations import network
from destinations.network import (
    AddressRefused,
    NetworkPolicyError,
    Target,
    resolve_host,
    resolve_target,
    validate_url,
)
from tests.destinations.resolver import refusal, resolver_of
from tests.dns import use_resolver


@pytest.fixture(autouse=True)
def public_only(settings):
    settings.AAMDEST_ALLOW_HTTP = False
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = False


def test_it_accepts_a_public_https_url():
    with use_resolver(resolver_of({"partner.example.com": ["93.184.216.34"]})):
        assert validate_url("https://partner.example.com/aam", field="url") == "https://partner.example.com/aam"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://partner.example.com/aam", "must start with https://"),
        ("ftp://partner.example.com/aam", "must start with https://"),
        ("partner.example.com/aam", "must start with https://"),
        ("", "empty"),
        ("https:///aam", "has no host"),
        ("https://partner.example.com:99999/aam", "not a valid URL"),
        ("https://partner.example.com:port/aam", "not a valid URL"),
        ("https://part ner.example.com/aam", "spaces or control characters"),
        ("https://bad..name/aam", "valid host name"),
    ],
)
def test_it_refuses_a_malformed_or_non_https_url_saying_why(url, expected):
    message = refusal(url)

    assert expected in message
    assert message.startswith("url: ")


@pytest.mark.parametrize(
    "url",
    [
        "https://partner.example.com/donn\u00e9es",
        "https://b\u00fccher.example/aam",
        "https://partner.example.com/aam?q=\u00e9",
        "https://user:hunter2@b\u00fccher.example/aam",
    ],
)
def test_it_refuses_a_non_ascii_url_asking_for_the_encoded_form(url):
    public = {"partner.example.com": ["93.184.216.34"], "xn--bcher-kva.example": ["93.184.216.34"]}
    with use_resolver(resolver_of(public)):
        message = refusal(url)

    assert message.startswith("url: ")
    assert "non-ASCII" in message and "IDNA" in message and "percent-encode" in message
    assert "hunter2" not in message


def test_it_accepts_the_idna_and_percent_encoded_form():
    url = "https://xn--bcher-kva.example/donn%C3%A9es"
    with use_resolver(resolver_of({"xn--bcher-kva.example": ["93.184.216.34"]})):
        assert validate_url(url, field="url") == url


def test_it_names_the_field_in_its_message():
    with pytest.raises(ValidationError) as caught:
        validate_url("http://partner.example.com/token", field="oauth_token_url")

    assert caught.value.messages[0].startswith("oauth_token_url: ")


def test_it_refuses_credentials_in_the_url_without_repeating_the_password():
    message = refusal("https://user:hunter2@partner.example.com/aam")

    assert "user name or password" in message
    assert "hunter2" not in message


def test_it_accepts_http_only_when_allowed(settings):
    settings.AAMDEST_ALLOW_HTTP = True
    with use_resolver(resolver_of({"partner.example.com": ["93.184.216.34"]})):
        assert validate_url("http://partner.example.com/aam", field="url")


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-public"),
        ("[::1]", "loopback"),
        ("[::]", "unspecified"),
        ("[fe80::1]", "link-local"),
        ("[fc00::1]", "private"),
        ("[ff02::1]", "multicast"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("[::ffff:10.0.0.1]", "private"),
        ("[64:ff9b::a9fe:a9fe]", "link-local"),
        ("2130706433", "loopback"),
        ("0177.0.0.1", "loopback"),
        ("0x7f.1", "loopback"),
        ("0x7f000001", "loopback"),
        ("127.1", "loopback"),
        ("127.0.0.1.", "loopback"),
        ("012.0.0.1", "private"),
    ],
)
def test_it_refuses_hosts_that_are_not_public_addresses_in_any_spelling(host, kind):
    with use_resolver(resolver_of({})):
        message = refusal(f"https://{host}/aam")

    assert f" {kind} address" in message
    assert "AAMDEST_ALLOW_PRIVATE_NETWORKS" in message


def test_it_refuses_a_name_that_resolves_to_a_private_address():
    with use_resolver(resolver_of({"internal.example.com": ["93.184.216.34", "10.0.0.7"]})):
        message = refusal("https://internal.example.com/aam")

    assert "'internal.example.com' (10.0.0.7) is a private address" in message


def test_it_accepts_a_name_it_cannot_resolve_yet():
    resolver = resolver_of({})
    with use_resolver(resolver):
        assert validate_url("https://not-live-yet.example.com/aam", field="url")

    assert resolver.calls == [("not-live-yet.example.com", 443)]


def test_it_accepts_private_addresses_when_private_networks_are_allowed(settings):
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = True

    assert validate_url("https://127.0.0.1:8443/aam", field="url")
    assert validate_url("https://[::ffff:10.0.0.1]/aam", field="url")


def test_it_pins_the_first_resolved_address_at_send_time():
    with use_resolver(resolver_of({"partner.example.com": ["93.184.216.34", "2606:2800:220:1::1"]})):
        target = resolve_target("https://partner.example.com:8443/aam?x=1")

    assert target == Target(
        "https", "partner.example.com", 8443, "93.184.216.34", ("93.184.216.34", "2606:2800:220:1::1")
    )


def test_it_uses_the_default_port_of_the_scheme(settings):
    settings.AAMDEST_ALLOW_HTTP = True
    with use_resolver(resolver_of({"partner.example.com": ["93.184.216.34"]})):
        assert resolve_target("https://partner.example.com/aam").port == 443
        assert resolve_target("http://partner.example.com/aam").port == 80


def test_it_refuses_at_send_time_a_name_that_now_resolves_to_a_private_address():
    refused = pytest.raises(AddressRefused, match="'partner.example.com' \\(127.0.0.1\\) is a loopback")
    with use_resolver(resolver_of({"partner.example.com": ["127.0.0.1"]})), refused:
        resolve_target("https://partner.example.com/aam")


def test_it_refuses_at_send_time_a_name_it_cannot_resolve():
    refused = pytest.raises(AddressRefused, match="cannot resolve host 'gone.example.com'")
    with use_resolver(resolver_of({})), refused:
        resolve_target("https://gone.example.com/aam")


def test_it_refuses_at_send_time_a_scheme_that_is_not_allowed():
    with pytest.raises(AddressRefused, match="must start with https://"):
        resolve_target("http://partner.example.com/aam")


def test_it_refuses_at_send_time_a_non_ascii_url():
    refused = pytest.raises(AddressRefused, match="non-ASCII")
    with use_resolver(resolver_of({"partner.example.com": ["93.184.216.34"]})), refused:
        resolve_target("https://partner.example.com/donn\u00e9es")


def test_address_refused_is_a_network_policy_error():
    assert issubclass(AddressRefused, NetworkPolicyError)


def test_the_default_resolver_reads_the_hosts_file():
    assert "127.0.0.1" in resolve_host("localhost", 443)


def test_use_resolver_restores_the_previous_resolver():
    with use_resolver(resolver_of({"localhost": ["192.0.2.1"]})):
        assert network.resolve_host("localhost", 443) == ["192.0.2.1"]

    assert "127.0.0.1" in network.resolve_host("localhost", 443)


@pytest.mark.parametrize("host", ["localhost", "loCalhost.", "api.localhost", "API.LOCALHOST."])
def test_loopback_names_are_refused_by_name_even_when_they_do_not_resolve(settings, host):
    # Given private networks are not allowed and a resolver that cannot answer
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = False

    def unresolvable(name: str, port: int) -> list[str]:
        raise OSError("no resolver here")

    with use_resolver(unresolvable):
        # Then configuration and send time both refuse the name
        with pytest.raises(ValidationError, match="loopback name"):
            network.validate_url(f"https://{host}/aam", field="url")
        with pytest.raises(network.AddressRefused, match="loopback name"):
            network.resolve_target(f"https://{host}/aam")
