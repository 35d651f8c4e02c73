"""The multi-node layout of docs/DEPLOY.md, run through honcho and the Procfile (CONTRACT §6, issue 12).

One PostgreSQL (the test database) and one broker (the test session's), and, each
a `honcho start` of Procfile process types (tests/e2e/nodes.py):

    web-1, web-2   `web` (gunicorn) on two ports; events are posted to both
    realtime-1/-2  `realtime`, with their own worker names (AAMDEST_NODE_NAME)
    core           `batch` and `beat`: the batch-and-maintenance node and the one scheduler

and a local HTTPS partner recording every document in arrival order. Events
come in waves: qualifications of new devices, and disqualifications of half of
an earlier wave's devices. Mid-run realtime-1 gets SIGTERM and realtime-2
SIGKILL; both are started again. Then every device must have reached the
partner with its latest state, duplicates must stay within 1 % of the devices,
and no device may be seen qualified ("1") after it was seen disqualified ("0").
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.conf import settings
from rest_framework.authtoken.models import Token

from aamdest.celery import app
from delivery.coordination import scheduling_client
from delivery.realtime.flush import CLAIM_MAX_REQUESTS
from partner.certificates import CertificateFiles
from tests.delivery.pending_work import map_segments
from tests.e2e.conftest import database_url
from tests.e2e.nodes import Fleet, Node
from tests.e2e.steps import SEGMENT, wait_until
from tests.factories import DestinationFactory
from tests.local_partner import Partner
from tests.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WAVES = 24
DEVICES_PER_WAVE = 150
USERS_PER_REQUEST = 10
# A SIGKILLed worker's requests that the partner acknowledged but the worker had not recorded are sent
# again (at least once): up to one claim's requests (CLAIM_MAX_REQUESTS) of USERS_PER_REQUEST users. So
# 1 % of the devices bounds the duplicates only from 100 such claims' worth of devices (25,000) per kill,
# more than this test can deliver in its time; below that, one claim's worth is the bound.
DUPLICATES_BOUND = max(0.01 * WAVES * DEVICES_PER_WAVE, CLAIM_MAX_REQUESTS * USERS_PER_REQUEST)
WAVE_PERIOD_S = 0.5
SIGTERM_AT, SIGKILL_AT, RESTART_AT = 6, 10, 15  # waves
# How long a SIGTERMed worker may take to finish what it holds before it is killed, as an
# orchestrator's grace period would (it also bounds the test on a slow machine).
GRACE_S = 45
START_TIMEOUT_S = 120
DELIVERY_BOUND_S = 150


@pytest.fixture
def fleet(certificates: CertificateFiles, local_network, transactional_db, tmp_path: Path) -> Iterator[Fleet]:
    """The nodes' environment, on an emptied Redis database; every process killed at the end."""
    scheduling_client().flushdb()
    if not settings.IS_REDIS_BROKER:
        app.control.purge()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("AAMDEST_") and key != "PORT"}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        DATABASE_URL=database_url(), CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        AAMDEST_REDIS_URL=settings.AAMDEST_REDIS_URL, AAMDEST_ALLOW_PRIVATE_NETWORKS="1",
        AAMDEST_CA_BUNDLE=str(certificates.ca_file), DJANGO_DEBUG="1", PYTHONUNBUFFERED="1",
        AAMDEST_BEAT_SCHEDULE=str(tmp_path / "beat-schedule"), AAMDEST_WEB_WORKERS="1",
    )
    fleet = Fleet(env=env, directory=tmp_path)
    try:
        yield fleet
    finally:
        fleet.kill_all()
        scheduling_client().flushdb()


def worker_name(node: str) -> str:
    return f"{node}@{socket.gethostname()}"


def wait_until_up(web_urls: list[str], workers: list[str]) -> None:
    def web_ready() -> bool:
        try:
            return all(requests.get(f"{url}/readyz", timeout=2).status_code == 200 for url in web_urls)
        except requests.RequestException:  # not listening yet, or still starting
            return False

    wait_until(web_ready, timeout_s=START_TIMEOUT_S, interval_s=0.5)
    wait_until(lambda: len(app.control.ping(destination=workers, timeout=1)) == len(workers),
               timeout_s=START_TIMEOUT_S, interval_s=0.5)


def tasks_done(node: str) -> int:
    stats = app.control.inspect(destination=[worker_name(node)], timeout=2).stats() or {}
    return sum(stats.get(worker_name(node), {}).get("total", {}).values())


class Faults:
    """SIGTERM realtime-1, SIGKILL realtime-2, then start both again, at given waves."""

    def __init__(self, fleet: Fleet, realtime: dict[str, Node]) -> None:
        self.fleet, self.realtime = fleet, realtime
        self.terminated_at = 0.0
        self.work_before: dict[str, int] = {}
        self.grace_exceeded = False

    def at(self, wave: int) -> None:
        if wave == SIGTERM_AT:
            self.work_before = {name: tasks_done(name) for name in self.realtime}
            self.realtime["realtime-1"].signal(signal.SIGTERM)
            self.terminated_at = time.monotonic()
        elif wave == SIGKILL_AT:
            self.realtime["realtime-2"].signal(signal.SIGKILL)
        elif wave == RESTART_AT:
            self.restart()

    def restart(self) -> None:
        terminated = self.realtime["realtime-1"]
        if not terminated.wait_exit(timeout_s=max(0.0, self.terminated_at + GRACE_S - time.monotonic())):
            self.grace_exceeded = True
            terminated.kill()
        assert self.realtime["realtime-2"].wait_exit(timeout_s=10), "SIGKILL left realtime-2 running"
        for name in self.realtime:
            self.realtime[name] = self.fleet.start(name, "realtime", AAMDEST_NODE_NAME=name)
        wait_until_up([], [worker_name(name) for name in self.realtime])


def device(wave: int, index: int) -> str:
    return f"mn-{wave:02d}-{index:03d}"


def wave_events(wave: int, base: dt.datetime) -> tuple[list[dict], list[dict]]:
    """This wave's qualifications of new devices, and disqualifications of half of wave - 2's."""
    at = (base + dt.timedelta(seconds=wave)).strftime("%Y-%m-%dT%H:%M:%SZ")
    qualifications = [{"type": "qualification", "aam_uuid": device(wave, index), "segment_id": SEGMENT,
                       "datetime": at} for index in range(DEVICES_PER_WAVE)]
    disqualifications = [{"type": "disqualification", "aam_uuid": device(wave - 2, index),
                          "segment_id": SEGMENT, "datetime": at} for index in range(0, DEVICES_PER_WAVE, 2)]
    return qualifications, disqualifications if wave >= 2 else []


def expected_states() -> dict[str, str]:
    states = {device(wave, index): "1" for wave in range(WAVES) for index in range(DEVICES_PER_WAVE)}
    states.update({device(wave, index): "0" for wave in range(WAVES - 2)
                   for index in range(0, DEVICES_PER_WAVE, 2)})
    return states


def post_waves(web_urls: list[str], token: str, faults: Faults) -> None:
    sessions = [requests.Session() for _ in web_urls]
    base = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
    for wave in range(WAVES):
        started = time.monotonic()
        for offset, events in enumerate(wave_events(wave, base)):
            node = (wave + offset) % len(web_urls)  # both web nodes take both kinds of events
            if events:
                response = sessions[node].post(f"{web_urls[node]}/api/v1/events/", json=events, timeout=30,
                                               headers={"Authorization": f"Token {token}"})
                assert response.status_code == 202, (web_urls[node], response.status_code, response.text)
        faults.at(wave)
        time.sleep(max(0.0, started + WAVE_PERIOD_S - time.monotonic()))


_parsed: dict[int, tuple[int, dict[str, list[str]]]] = {}  # per partner: requests read, statuses


def statuses_seen(partner: Partner) -> dict[str, list[str]]:
    """Per device, the Status of its segment in each document the partner accepted, in arrival order."""
    read, seen = _parsed.get(id(partner), (0, {}))
    with partner.lock:
        bodies = [received.body for received in partner.requests[read:]]
    for body in bodies:
        for user in json.loads(body)["Users"]:
            [segment] = [s for s in user["Segments"] if s["Segment_ID"] == str(SEGMENT)]
            seen.setdefault(user["AAM_UUID"], []).append(segment["Status"])
    _parsed[id(partner)] = (read + len(bodies), seen)
    return seen


@pytest.mark.timeout(420)  # about 100 s on a quiet machine; 2 shared cores at load 20 take longer
def test_web_and_worker_nodes_through_the_procfile_survive_sigterm_and_sigkill(
    fleet: Fleet, operator_client, partner: Partner
):
    destination = DestinationFactory(url=partner.url, max_wait_ms=200, timeout_ms=2000, retry_delay_ms=100,
                                     max_users_per_request=USERS_PER_REQUEST)
    map_segments(destination, SEGMENT)
    token = Token.objects.get(user=operator_client.user).key
    web_urls = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    for number, url in enumerate(web_urls, 1):
        fleet.start(f"web-{number}", "web", AAMDEST_WEB_BIND=url.removeprefix("http://"))
    core = fleet.start("core", "batch", "beat")
    realtime = {name: fleet.start(name, "realtime", AAMDEST_NODE_NAME=name)
                for name in ("realtime-1", "realtime-2")}
    started = time.monotonic()
    wait_until_up(web_urls, [worker_name(name) for name in (*realtime, "batch")])
    print(f"nodes up after {time.monotonic() - started:.0f} s")
    faults = Faults(fleet, realtime)

    post_waves(web_urls, token, faults)
    print(f"waves posted, realtime nodes restarted after {time.monotonic() - started:.0f} s")
    expected = expected_states()
    wait_until(lambda: all(statuses_seen(partner).get(aam_uuid, ["-"])[-1] == state
                           for aam_uuid, state in expected.items()), timeout_s=DELIVERY_BOUND_S, interval_s=1)
    print(f"every device delivered after {time.monotonic() - started:.0f} s")
    time.sleep(2)  # a stray late send would arrive by now

    seen = statuses_seen(partner)
    assert set(seen) == set(expected)
    assert [aam_uuid for aam_uuid, states in seen.items() if is_out_of_order(states)] == []
    duplicated = [aam_uuid for aam_uuid, states in seen.items() if len(states) > len(collapsed(states))]
    assert len(duplicated) <= DUPLICATES_BOUND, (len(duplicated), duplicated[:20])
    assert all(count > 0 for count in faults.work_before.values()), faults.work_before
    health = requests.get(f"{web_urls[0]}/healthz", timeout=5).json()
    assert core.process.poll() is None and health["beat_last_tick_age_s"] < 10, health
    print(f"{len(expected)} devices, {sum(map(len, seen.values()))} user objects received, "
          f"{len(duplicated)} devices duplicated; realtime-1 finished within {GRACE_S} s of SIGTERM: "
          f"{not faults.grace_exceeded}")


def collapsed(states: list[str]) -> list[str]:
    """The states without consecutive repeats (a repeat is a duplicate send)."""
    return [state for index, state in enumerate(states) if index == 0 or states[index - 1] != state]


def is_out_of_order(states: list[str]) -> bool:
    """Whether the device was seen qualified again after it was seen disqualified."""
    return "0" in states and "1" in states[states.index("0"):]
