"""The HTTP edge's connections: keep-alive, no reuse after a failure, concurrent post_many."""

from __future__ import annotations

import time

from delivery.sending.http import HttpRequest, post, post_many
from tests.delivery.sending.http_requests import request_to
from tests.local_partner import Reply


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
