"""The end-to-end harness: real Celery workers and beat as subprocesses, on the test database.

Each test gets an empty Redis database (the one named by TEST_BROKER_URL), a
beat and one worker (`celery_stack`), and may start more workers or SIGKILL one.
Each runs twice, once per broker (`broker_url`): Redis, and RabbitMQ at
TEST_AMQP_URL, with Redis kept for coordination; the test process publishes to
the same broker as its workers.
The processes use the test database that pytest-django created, so the tests
are `transaction=True`: rows the test writes are committed and seen by the
workers, and the workers' rows are seen by the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection
from kombu import pools

from aamdest.celery import app
from delivery.coordination import scheduling_client
from partner.certificates import CertificateFiles

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))
START_TIMEOUT_S = 30
AMQP_URL = os.environ.get("TEST_AMQP_URL") or "amqp://guest:guest@127.0.0.1:5672//"


def database_url() -> str:
    """The URL of the database this test session uses (pytest-django's `test_…` copy)."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "127.0.0.1"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{credentials}@{host}{port}/{quote(db['NAME'], safe='')}"


@dataclass
class CeleryStack:
    """The Celery processes of one test; every one is killed when the test ends."""

    env: dict[str, str]
    directory: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start_worker(
        self, name: str = "worker", *, wait: bool = True, plain: bool = False, extra: tuple[str, ...] = ()
    ) -> subprocess.Popen:
        """A worker; `plain` starts it as an operator would, with no pool, concurrency or queue flag."""
        pool = [] if plain else ["--pool", "threads", "--concurrency", "8"]
        args = [
            "worker", *pool, "--hostname", f"{name}@e2e",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO", *extra,
        ]
        process = self._start(name, args)
        if wait:
            self.wait_for_log(name, "ready.")
        return process

    def start_beat(self) -> subprocess.Popen:
        schedule = self.directory / "beat-schedule"
        return self._start("beat", ["beat", "--schedule", str(schedule), "--loglevel", "INFO"])

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = (self.directory / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [CELERY, "-A", "aamdest", *args], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")

    def wait_for_log(self, name: str, text: str, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log(name):
                return
            if self.processes[name].poll() is not None:
                raise AssertionError(f"{name} exited:\n{self.log(name)[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"{name} did not log {text!r} in {timeout_s}s:\n{self.log(name)[-3000:]}")

    def kill(self, name: str) -> None:
        """SIGKILL, as a crashed machine would: no shutdown, no acknowledgement."""
        process = self.processes[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def terminate(self, name: str, *, timeout_s: float) -> float:
        """SIGTERM, as an orchestrator stopping the process; return how long it took to exit."""
        process = self.processes[name]
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} still runs {timeout_s}s after SIGTERM:\n{self.log(name)[-3000:]}")
        return time.monotonic() - started

    def stop_all(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is None:
                self.kill(name)


def publish_to(url: str) -> None:
    """Point this process's Celery app at the broker `url` (its connection pools are rebuilt)."""
    pools.reset()  # closes kombu's shared pools and forgets them, so none is handed out closed
    # Celery reads the variable before its configuration (`Settings.broker_url`).
    os.environ["CELERY_BROKER_URL"] = url
    app.conf.broker_url = url
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The broker of this test's workers and of the tasks it queues, its queues emptied first."""
    redis_url = settings.CELERY_BROKER_URL
    url = redis_url if request.param == "redis" else AMQP_URL
    publish_to(url)
    app.control.purge()
    try:
        yield url
    finally:
        publish_to(redis_url)


@pytest.fixture
def worker_env(
    certificates: CertificateFiles, transactional_db, tmp_path: Path, broker_url: str
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AAMDEST_")}
    env.update(
        DATABASE_URL=database_url(),
        CELERY_BROKER_URL=broker_url,
        AAMDEST_REDIS_URL=settings.AAMDEST_REDIS_URL,
        AAMDEST_ALLOW_PRIVATE_NETWORKS="1",
        AAMDEST_CA_BUNDLE=str(certificates.ca_file),
        DJANGO_DEBUG="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def celery_stack(
    worker_env: dict[str, str], local_network: CertificateFiles, tmp_path: Path
) -> Iterator[CeleryStack]:
    """Beat and one worker, started on an emptied Redis database; all killed at the end."""
    scheduling_client().flushdb()
    stack = CeleryStack(env=worker_env, directory=tmp_path)
    try:
        stack.start_beat()
        stack.start_worker()
        yield stack
    finally:
        stack.stop_all()
        scheduling_client().flushdb()
