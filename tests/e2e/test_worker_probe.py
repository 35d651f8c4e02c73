"""End to end, `manage.py worker_probe` against real workers: healthy, hung (stuck pool, SIGSTOP), dead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from aamdest.celery import app
from delivery.coordination import scheduling_client
from tests.e2e.blocking_tasks import BLOCKED_KEY
from tests.e2e.conftest import ROOT, CeleryStack
from tests.e2e.steps import wait_until

# The broker plays no part in the heartbeat: Redis alone.
pytestmark = [
    pytest.mark.e2e, pytest.mark.django_db(transaction=True),
    pytest.mark.parametrize("broker_url", ["redis"], indirect=True),
]

NAME = "probed"
THREADS = 4
MAX_AGE_S = 3
# A verdict comes within the heartbeat's max age, plus a probe's start (a Django command: seconds on a
# loaded machine) and slack.
DETECTED_WITHIN_S = 30


def start_probed(stack: CeleryStack) -> subprocess.Popen:
    """A worker beating every second, on its own queue, with the test's blocking task loaded."""
    stack.env["AAMDEST_WORKER_HEARTBEAT_S"] = "1"
    return stack.start_worker(NAME, extra=("--concurrency", str(THREADS), "-Q", "probe-test",
                                           "--include", "tests.e2e.blocking_tasks"))


def probe(stack: CeleryStack) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "manage.py", "worker_probe", "--hostname", f"{NAME}@e2e",
         "--max-age", str(MAX_AGE_S)],
        cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=30,
    )
    return done.returncode, done.stdout.strip()


def verdict(stack: CeleryStack, *, status: int) -> str:
    """Probe until it exits with `status`; return its line."""
    def answered():
        code, line = probe(stack)
        return line if code == status else None
    return wait_until(answered, timeout_s=DETECTED_WITHIN_S, interval_s=0.2)


def test_a_working_worker_is_healthy_and_one_whose_every_thread_is_stuck_is_hung(celery_stack):
    process = start_probed(celery_stack)
    assert verdict(celery_stack, status=0).startswith(f"healthy: {NAME}@e2e (pid {process.pid})")

    # When every pool thread blocks (as on a lock nobody releases)
    scheduling_client().delete(BLOCKED_KEY)
    try:
        for _ in range(THREADS):
            app.send_task("tests.e2e.blocking_tasks.block", args=(120,), queue="probe-test")
    finally:
        app.amqp.queues.pop("probe-test", None)  # send_task declared it on the app the other tests read
    wait_until(lambda: int(scheduling_client().get(BLOCKED_KEY) or 0) == THREADS, timeout_s=10)
    blocked_at = time.monotonic()

    # Then the probe reports it hung, its process still running
    line = verdict(celery_stack, status=1)
    assert time.monotonic() - blocked_at < DETECTED_WITHIN_S
    assert line.startswith(f"unhealthy: {NAME}@e2e is hung: pid {process.pid} still runs")


def test_a_stopped_worker_is_hung_and_a_killed_one_dead(celery_stack):
    process = start_probed(celery_stack)
    verdict(celery_stack, status=0)

    os.kill(process.pid, signal.SIGSTOP)
    try:
        line = verdict(celery_stack, status=1)
        assert line.startswith(f"unhealthy: {NAME}@e2e is hung: pid {process.pid} is stopped")
    finally:
        os.kill(process.pid, signal.SIGCONT)
    assert verdict(celery_stack, status=0).startswith("healthy:")  # it beats again once resumed

    celery_stack.kill(NAME)
    line = verdict(celery_stack, status=1)
    assert line.startswith(f"unhealthy: {NAME}@e2e is dead: pid {process.pid} is gone")
