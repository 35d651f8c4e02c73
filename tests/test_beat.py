"""One scheduler, even by mistake: two beats never both send (CONTRACT §6, aamdest/beat.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from aamdest.beat import LEADER_KEY, LeaderLease
from delivery.coordination import BEAT_TICK_KEY, scheduling_client
from delivery.observability.heartbeat import last_beat_tick

ROOT = Path(__file__).resolve().parent.parent
CELERY = str(Path(sys.executable).with_name("celery"))
LEASE_S = 3
SENT_TICK = "Sending due task delivery-tick"


@pytest.fixture
def clean_lease() -> Iterator[None]:
    scheduling_client().delete(LEADER_KEY, BEAT_TICK_KEY)
    yield
    scheduling_client().delete(LEADER_KEY, BEAT_TICK_KEY)


@pytest.fixture
def beats(tmp_path: Path, clean_lease) -> Iterator[dict[str, subprocess.Popen]]:
    """Two `celery -A aamdest beat` started as an operator would by mistake, each with its own file."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AAMDEST_")}
    env.update(DJANGO_DEBUG="1", CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
               AAMDEST_REDIS_URL=settings.AAMDEST_REDIS_URL, AAMDEST_BEAT_LEASE_S=str(LEASE_S))
    started: dict[str, subprocess.Popen] = {}
    try:
        for name in ("a", "b"):
            with (tmp_path / f"{name}.log").open("wb") as log:
                started[name] = subprocess.Popen(
                    [CELERY, "-A", "aamdest", "beat", "--schedule", str(tmp_path / f"{name}.schedule"),
                     "--loglevel", "INFO"],
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
        yield started
    finally:
        for process in started.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        scheduling_client().delete("realtime", "batch", "maintenance")


def read_log(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.log").read_text(errors="replace")


def wait_for(condition, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s}s")


def test_a_lease_has_one_holder_until_it_is_handed_back_or_lapses(clean_lease):
    first = LeaderLease(url=settings.AAMDEST_REDIS_URL, lease_s=2)
    second = LeaderLease(url=settings.AAMDEST_REDIS_URL, lease_s=2)

    assert first.hold() and first.hold()  # taken, then renewed
    assert not second.hold()
    first.release()
    assert second.hold() and not first.hold()
    time.sleep(2.2)  # the holder stops renewing
    assert first.hold()


def test_two_beats_send_each_tick_once_and_the_standby_takes_over(beats, tmp_path):
    # Given two beats started side by side, one of which leads
    def roles() -> tuple[str, str] | None:
        logs = {name: read_log(tmp_path, name) for name in beats}
        leaders = [name for name, log in logs.items() if "leading" in log]
        waiting = [name for name, log in logs.items() if "standing by" in log]
        return (leaders[0], waiting[0]) if len(leaders) == 1 and len(waiting) == 1 else None

    wait_for(roles, timeout_s=60)
    leader, standby = roles()
    sent_before = read_log(tmp_path, leader).count(SENT_TICK)

    # When they run for 10 s
    time.sleep(10)

    # Then the leader sends a tick a second, the other nothing
    assert 8 <= read_log(tmp_path, leader).count(SENT_TICK) - sent_before <= 11
    assert SENT_TICK not in read_log(tmp_path, standby)
    assert "leading" not in read_log(tmp_path, standby)
    assert time.time() - last_beat_tick() < 2

    # When the leader dies without a word
    os.killpg(beats[leader].pid, signal.SIGKILL)
    beats[leader].wait(timeout=10)
    killed_at = time.monotonic()

    # Then the standby leads within the lease, and sends the ticks
    wait_for(lambda: "leading" in read_log(tmp_path, standby), timeout_s=LEASE_S + 3)
    assert time.monotonic() - killed_at <= LEASE_S + 2
    wait_for(lambda: read_log(tmp_path, standby).count(SENT_TICK) >= 2, timeout_s=5)
    assert time.time() - last_beat_tick() < 2
