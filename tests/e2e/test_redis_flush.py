"""End to end: Redis holds only what can be rebuilt; flushed mid-run, it loses nothing (DEPLOY.md, Backups).

A worker and beat run; events for many devices come in waves while the partner answers slowly,
so that flushes, slots, guards, wake-up timers, queued tasks (with the Redis broker) and beat's
lease are all in Redis when it is flushed. Afterwards every device must still be sent, with its
latest state, and nothing may stay pending.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from django.utils import timezone

from delivery.coordination import scheduling_client
from delivery.models import Delivery, DeliveryStatus
from delivery.observability.heartbeat import last_beat_tick
from delivery.sending.documents import format_aam_time
from tests.delivery.pending_work import map_segments
from tests.e2e.steps import SEGMENT, ingest, qualify, wait_until
from tests.e2e.test_workers import all_sent
from tests.factories import DestinationFactory
from tests.local_partner import Received, Reply, start_partner
from tests.token_endpoint import token_reply

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DEVICES = 40
WAVES = 12
FLUSH_AFTER_WAVE = 5


def last_wave(index: int) -> int:
    """Devices stop changing at different waves, so that their latest states differ."""
    return WAVES - 1 - index % 3


def wave_events(wave: int, at: dt.datetime) -> list[dict]:
    kind = "qualification" if wave % 2 == 0 else "disqualification"
    return [
        {**qualify(f"device-{index:02d}"), "type": kind, "datetime": at.isoformat()}
        for index in range(DEVICES) if wave <= last_wave(index)
    ]


def latest_sent(requests) -> dict[str, list[tuple[str, str, str]]]:
    """Each device's segments in the last document the partner accepted for it."""
    latest: dict[str, list[tuple[str, str, str]]] = {}
    for received in requests:
        for user in json.loads(received.body)["Users"]:
            segments = user["Segments"]
            latest[user["AAM_UUID"]] = [(s["Segment_ID"], s["Status"], s["DateTime"]) for s in segments]
    return latest


@pytest.fixture
def token_server(local_network):
    """An OAuth token endpoint issuing tok-1, tok-2…: a new token per fetch."""
    server = start_partner(local_network)
    server.responder = lambda received: token_reply(f"tok-{len(server.requests)}")
    yield server
    server.stop()


@pytest.fixture
def oauth_partner(local_network):
    """A second partner, behind OAuth: it accepts any token the token server issued."""
    server = start_partner(local_network)

    def answer(received: Received) -> Reply:
        authorized = received.headers.get("Authorization", "").startswith("Bearer tok-")
        return Reply(delay_s=0.2) if authorized else Reply(status=401)

    server.responder = answer
    yield server
    server.stop()


@pytest.fixture
def destinations(partner, token_server, oauth_partner):
    """Two destinations whose partners answer slowly (requests in flight at any moment), one with OAuth."""
    plain = DestinationFactory(url=partner.url, max_wait_ms=200, retry_delay_ms=100, max_users_per_request=10)
    oauth = DestinationFactory(url=oauth_partner.url, max_wait_ms=200, retry_delay_ms=100,
                               max_users_per_request=10, auth_mode="oauth2",
                               oauth_token_url=token_server.url, oauth_client_id="aamdest",
                               oauth_client_secret="secret")
    map_segments(plain, SEGMENT)
    map_segments(oauth, SEGMENT)
    partner.script = [Reply(delay_s=0.2)]
    return plain, oauth


def assert_latest_states(requests: list[Received], moments: list[dt.datetime]) -> None:
    """Each device's last document carries the state of the last wave it was in."""
    latest = latest_sent(requests)
    for index in range(DEVICES):
        wave = last_wave(index)
        status = "1" if wave % 2 == 0 else "0"
        expected = [(str(SEGMENT), status, format_aam_time(moments[wave]))]
        assert latest[f"device-{index:02d}"] == expected, index


def test_flushing_redis_mid_run_loses_nothing(
    celery_stack, operator_client, partner, token_server, oauth_partner, destinations
):
    # Given the two destinations, and events that come in waves
    base = timezone.now().replace(microsecond=0) - dt.timedelta(minutes=5)
    moments = [base + dt.timedelta(seconds=wave) for wave in range(WAVES)]

    # When Redis (with the Redis broker, the broker too) is flushed mid-run
    for wave, at in enumerate(moments):
        ingest(operator_client, wave_events(wave, at))
        time.sleep(0.3)
        if wave == FLUSH_AFTER_WAVE:
            assert scheduling_client().keys("aamdest:*")  # there was something to lose
            scheduling_client().flushdb()
    flushed_at = time.monotonic()

    # Then every device is sent to both, with its latest state, and nothing stays pending or failed
    for each in destinations:
        wait_until(lambda: all_sent(each, devices=DEVICES), timeout_s=45, interval_s=0.2)  # noqa: B023
    assert time.monotonic() - flushed_at < 45
    assert_latest_states(partner.requests, moments)
    authorized = [received for received in oauth_partner.requests
                  if "tok-" in received.headers.get("Authorization", "")]
    assert_latest_states(authorized, moments)
    assert set(Delivery.objects.values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}
    # the token was fetched again once its cache was gone
    assert len(token_server.requests) >= 2
    # and beat leads again: its lease and its tick were rebuilt
    wait_until(lambda: (last_beat_tick() or 0) > time.time() - 3, timeout_s=5)
