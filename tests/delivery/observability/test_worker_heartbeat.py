"""Workers' heartbeats and `manage.py worker_probe`: healthy, hung, dead, unknown (CONTRACT §6)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from prometheus_client.parser import text_string_to_metric_families

from delivery.coordination import worker_heartbeat_key
from delivery.management.commands.worker_probe import probe
from delivery.observability.worker_heartbeat import Heartbeat, read_heartbeat, write_heartbeat
from delivery.progress import note_progress
from tests.ports import free_port

pytestmark = pytest.mark.usefixtures("empty_redis")

NAME = "realtime@node-1"


class RunningPool:
    """A pool whose threads run what they are given at once."""

    def __init__(self) -> None:
        self.ran = 0

    def apply_async(self, target: Callable[..., Any], args=(), kwargs=None, callback=None, **options) -> None:
        self.ran += 1
        result = target(*args, **(kwargs or {}))
        if callback is not None:
            callback(result)


class StuckPool:
    """A pool whose every thread is blocked: what it is given never runs."""

    def __init__(self) -> None:
        self.submitted = 0

    def apply_async(self, target: Callable[..., Any], args=(), kwargs=None, callback=None, **options) -> None:
        self.submitted += 1


def test_a_pool_that_runs_the_no_op_is_alive():
    assert Heartbeat(hostname=NAME, pool=RunningPool(), interval_s=0.05).beat_once()


def test_a_pool_whose_threads_are_all_stuck_is_not_and_gets_one_no_op_at_a_time():
    pool = StuckPool()
    heartbeat = Heartbeat(hostname=NAME, pool=pool, interval_s=0.05)

    assert not heartbeat.beat_once()
    assert not heartbeat.beat_once()
    assert pool.submitted == 1


def test_a_busy_pool_whose_threads_get_on_with_their_work_is_alive():
    heartbeat = Heartbeat(hostname=NAME, pool=StuckPool(), interval_s=0.05)
    assert not heartbeat.beat_once()

    note_progress()  # a thread recorded an attempt round

    assert heartbeat.beat_once()
    assert not heartbeat.beat_once()


def test_the_thread_writes_the_heartbeat_and_removes_it_when_stopped(empty_redis):
    heartbeat = Heartbeat(hostname=NAME, pool=RunningPool(), interval_s=0.05)
    heartbeat.start()
    try:
        deadline = time.monotonic() + 5
        while read_heartbeat(NAME) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        beat = read_heartbeat(NAME)
        assert beat is not None and beat.pid == os.getpid() and beat.age_s < 1
        assert 0 < empty_redis.ttl(worker_heartbeat_key(NAME)) <= 3600
    finally:
        heartbeat.stop()
        heartbeat.join(timeout=5)
    assert read_heartbeat(NAME) is None


def test_the_probe_says_healthy_while_the_heartbeat_is_recent():
    write_heartbeat(NAME)

    healthy, reason = probe(hostname=NAME, max_age_s=10)

    assert healthy
    assert reason.startswith(f"{NAME} (pid {os.getpid()}) beat ")


def test_an_old_heartbeat_of_a_running_process_is_a_hung_worker():
    write_heartbeat(NAME, at=time.time() - 30)

    healthy, reason = probe(hostname=NAME, max_age_s=10)

    assert not healthy
    assert f"is hung: pid {os.getpid()} still runs" in reason
    assert "over 10 s" in reason


def test_an_old_heartbeat_of_a_process_gone_is_a_dead_worker(empty_redis, monkeypatch):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, check=True)
    gone = int(ended.stdout)
    monkeypatch.setattr(os, "getpid", lambda: gone)
    write_heartbeat(NAME, at=time.time() - 30)
    monkeypatch.undo()

    healthy, reason = probe(hostname=NAME, max_age_s=10)

    assert not healthy
    assert f"is dead: pid {gone} is gone" in reason


def test_without_a_heartbeat_or_redis_the_worker_is_unhealthy(settings):
    assert probe(hostname=NAME, max_age_s=10) == (
        False, f"no heartbeat from {NAME} (not started, stopped, or silent for over an hour)"
    )

    settings.AAMDEST_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    healthy, reason = probe(hostname=NAME, max_age_s=10)
    assert not healthy and reason.startswith("Redis does not answer (ConnectionError)")


def test_the_command_exits_1_with_one_line_when_unhealthy_and_0_when_healthy(capsys):
    with pytest.raises(SystemExit) as exited:
        call_command("worker_probe", "--hostname", NAME, "--max-age", "5")
    assert exited.value.code == 1
    assert capsys.readouterr().out.strip().startswith(f"unhealthy: no heartbeat from {NAME}")

    write_heartbeat(f"celery@{socket.gethostname()}")
    call_command("worker_probe")  # Celery's default node name: celery@<this machine>
    assert capsys.readouterr().out.startswith("healthy: celery@")


@pytest.mark.django_db
def test_metrics_show_each_workers_heartbeat_age(client):
    write_heartbeat(NAME, at=time.time() - 12)

    response = client.get("/metrics")

    [family] = [f for f in text_string_to_metric_families(response.content.decode())
                if f.name == "aamdest_worker_heartbeat_age_seconds"]
    [sample] = family.samples
    assert sample.labels == {"worker": NAME}
    assert 12 <= sample.value < 15
