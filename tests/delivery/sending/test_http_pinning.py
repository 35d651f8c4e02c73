"""Where a request may connect (CONTRACT §3, §2): only the checked addresses, and one host's hung
DNS does not hold back another's lookups."""

from __future__ import annotations

import threading
import time

import pytest

from delivery.sending.http import HttpRequest, post, post_many, resolving
from destinations.network import Target
from tests.dns import use_resolver


def request_to(url: str, *, timeout_ms: int = 3000) -> HttpRequest:
    headers = {"Content-Type": "application/json"}
    return HttpRequest(url=url, body=b"{}", headers=headers, timeout_ms=timeout_ms)


def test_curl_never_connects_to_an_address_that_was_not_checked(partner, monkeypatch):
    # Given a check that approved 127.0.0.2 while the URL spells the partner's 127.0.0.1
    def checked_elsewhere(url: str) -> Target:
        return Target("https", "127.0.0.1", partner.port, "127.0.0.2", ("127.0.0.2",))

    monkeypatch.setattr(resolving, "resolve_target", checked_elsewhere)

    # When
    result = post(request_to(f"https://127.0.0.1:{partner.port}/aam"))

    # Then curl did not reach the unchecked address
    assert result.reason == "connection"
    assert partner.requests == []


@pytest.mark.parametrize("hung_hosts", [1, 70])  # 70 hung origins: more than a pool of 64 threads held
def test_hosts_whose_dns_hangs_do_not_starve_the_lookups_of_another(partner, hung_hosts):
    # Given a resolver that hangs for some hosts only
    release = threading.Event()

    def resolve(host: str, port: int) -> list[str]:
        if host.startswith("hung"):
            release.wait(20)
        return ["127.0.0.1"]

    with use_resolver(resolve):
        try:
            # When many deliveries to the hung host wait for their lookups (in other threads too)
            hung = [request_to(f"https://hung{n % hung_hosts}.example.com:{partner.port}/aam", timeout_ms=400)
                    for n in range(80)]
            waiting = [threading.Thread(target=post_many, args=(hung[i::4],)) for i in range(4)]
            for thread in waiting:
                thread.start()
            time.sleep(0.1)
            started = time.monotonic()
            healthy = post(request_to(f"https://localhost:{partner.port}/aam", timeout_ms=1000))
            elapsed = time.monotonic() - started
            for thread in waiting:
                thread.join(5)
        finally:
            release.set()

    # Then the other host's request went out at once
    assert healthy.is_success, healthy.error
    assert elapsed < 0.5
    assert len(partner.requests) == 1
