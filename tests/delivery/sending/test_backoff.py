"""Retry-After (CONTRACT §7): a 429 or 503 holds the destination, and its retry waits at least that long."""

from __future__ import annotations

import datetime as dt
import time
from email.utils import format_datetime

import pytest
from django.utils import timezone

from delivery.leases import lease_until
from delivery.models import Delivery, DeliveryStatus
from delivery.sending import backoff, rounds
from destinations.models import CircuitState
from tests.delivery.sending.circuit_work import backlog, failing_destination, flush
from tests.local_partner import Reply

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_redis")]

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("value", "held_s"),
    [
        ("120", 120),
        (" 7 ", 7),
        ("3600", 300),  # capped at 300 s
        ("0", None),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        ("١٢", None),  # digits, but not ASCII ones
        (format_datetime(NOW + dt.timedelta(seconds=90), usegmt=True), 90),
        (format_datetime(NOW + dt.timedelta(hours=2), usegmt=True), 300),
        (format_datetime(NOW - dt.timedelta(seconds=10), usegmt=True), None),
        ("Monday, 02-Mar-26 12:01:00 GMT", 60),  # RFC 850
        ("Mon Mar  2 12:00:30 2026", 30),  # asctime
        ("Mon, 99 Foo 2026 12:00:30 GMT", None),
    ],
)
def test_retry_after_is_seconds_or_an_http_date_capped_at_300_s(value, held_s):
    until = backoff.parse_retry_after(value, now=NOW)
    assert until == (None if held_s is None else NOW + dt.timedelta(seconds=held_s))


def test_a_503_with_retry_after_holds_the_destination_and_nothing_is_claimed_until_then(partner):
    # Given a partner answering 503 Retry-After: 60
    partner.script = [Reply(status=503, headers=(("Retry-After", "60"),))]
    destination = failing_destination(partner, circuit_breaker=False)
    backlog(destination, 1, since=timezone.now())
    before = timezone.now()

    # When it is sent, then more becomes pending
    flush(destination)
    backlog(destination, 2, since=timezone.now(), prefix="later")

    # Then the destination is held about 60 s, the attempt failed, and nothing more goes out meanwhile
    destination.refresh_from_db()
    held = destination.hold_until
    assert before + dt.timedelta(seconds=59) <= held <= timezone.now() + dt.timedelta(seconds=60)
    assert Delivery.objects.get(destination=destination).status == DeliveryStatus.FAILED
    assert flush(destination) == 0
    assert len(partner.requests) == 1


def test_a_hold_never_moves_earlier(partner):
    destination = failing_destination(partner)
    later = timezone.now() + dt.timedelta(seconds=200)
    assert backoff.extend_hold(destination=destination, until=later)
    assert not backoff.extend_hold(destination=destination, until=later - dt.timedelta(seconds=100))
    destination.refresh_from_db()
    assert destination.hold_until == later


def test_a_429_counts_as_a_failed_attempt_towards_the_circuit(partner):
    partner.script = [Reply(status=429, headers=(("Retry-After", "1"),))]
    destination = failing_destination(partner, circuit_failure_threshold=2)
    backlog(destination, 2, since=timezone.now())
    flush(destination)
    destination.refresh_from_db()
    assert destination.circuit_state == CircuitState.OPEN


def test_the_retry_waits_at_least_until_the_hold_ends(partner):
    # Given a partner answering 503 Retry-After: 2, then 200, and a retry delay of 0
    partner.script = [Reply(status=503, headers=(("Retry-After", "2"),)), Reply()]
    destination = failing_destination(partner, circuit_breaker=False, max_retries=1, retry_delay_ms=0)
    delivery = Delivery.objects.create(
        destination=destination, kind="realtime", body=b"{}", user_count=0,
        lease_until=lease_until(destination=destination, now=timezone.now()),
    )

    # When it is sent
    rounds.send_deliveries(destination=destination, deliveries=[delivery])

    # Then the retry came 2 s after the first attempt (to within a second), and was delivered
    first, second = partner.requests
    assert 2.0 <= second.at - first.at < 3.0
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED


def test_an_invalid_retry_after_is_ignored(partner):
    partner.script = [Reply(status=503, headers=(("Retry-After", "tomorrow"),))]
    destination = failing_destination(partner, circuit_breaker=False)
    backlog(destination, 1, since=timezone.now())
    started = time.monotonic()
    flush(destination)
    destination.refresh_from_db()
    assert destination.hold_until is None
    assert time.monotonic() - started < 2
