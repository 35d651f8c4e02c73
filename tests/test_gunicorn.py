"""gunicorn with the project's configuration: JSON access log, whitenoise, graceful shutdown (CONTRACT §6)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.db import connection, transaction

from delivery.models import DestinationDevice
from tests.e2e.conftest import database_url
from tests.ports import free_port

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))



@dataclass
class Web:
    process: subprocess.Popen
    port: int
    access_log: Path

    def get(self, path: str, timeout_s: float = 10) -> http.client.HTTPResponse:
        client = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        client.request("GET", path)
        response = client.getresponse()
        response.read()
        return response

    def access_lines(self) -> list[dict]:
        lines = self.access_log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{") and '"gunicorn.access"' in line]


def production_env(port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AAMDEST_", "DJANGO_"))}
    env.update(
        DJANGO_DEBUG="0", DJANGO_SECRET_KEY="a-production-secret-key-for-the-gunicorn-test",
        AAMDEST_ENCRYPTION_KEYS=Fernet.generate_key().decode(), DJANGO_ALLOWED_HOSTS="127.0.0.1",
        DJANGO_SECURE_SSL_REDIRECT="0", DATABASE_URL=database_url(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL, AAMDEST_REDIS_URL=settings.AAMDEST_REDIS_URL,
        AAMDEST_LOG_FORMAT="json", AAMDEST_WEB_BIND=f"127.0.0.1:{port}",
        AAMDEST_WEB_WORKERS="1", AAMDEST_WEB_THREADS="2", AAMDEST_WEB_GRACEFUL_TIMEOUT_S="20",
    )
    return env


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    """gunicorn started as an operator would, from another directory, with only the config file."""
    port = free_port()
    access_log = tmp_path / "stdout.log"
    with access_log.open("wb") as stdout, (tmp_path / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen([GUNICORN, "-c", str(ROOT / "aamdest" / "gunicorn.conf.py")],
                                   cwd=tmp_path, env=production_env(port), stdout=stdout, stderr=stderr,
                                   start_new_session=True)
    running = Web(process=process, port=port, access_log=access_log)
    try:
        wait_for_answer(running, errors=tmp_path / "stderr.log")
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def wait_for_answer(web: Web, *, errors: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert web.process.poll() is None, errors.read_text()
        try:
            web.get("/healthz", timeout_s=5)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"gunicorn did not answer in {timeout_s}s:\n{errors.read_text()}")


def test_it_serves_the_app_and_whitenoise_with_one_json_access_line_per_request(web):
    # When
    health = web.get("/healthz?token=hunter2")
    stylesheet = web.get("/static/console/console.css")

    # Then
    assert health.status == 200
    assert stylesheet.status == 200 and stylesheet.getheader("Content-Type").startswith("text/css")
    time.sleep(0.2)  # the access line is written after the answer
    lines = {line["path"]: line for line in web.access_lines()}
    assert lines["/healthz"]["method"] == "GET"
    assert lines["/healthz"]["status"] == 200
    assert lines["/healthz"]["bytes"] > 0
    assert lines["/healthz"]["remote_addr"] == "127.0.0.1"
    assert lines["/healthz"]["duration_ms"] >= 0
    assert lines["/static/console/console.css"]["status"] == 200
    assert "hunter2" not in web.access_log.read_text()


def test_sigterm_lets_a_request_in_flight_finish(web):
    # Given a request held up by a lock on the table /healthz reads
    answers: list[int] = []
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {DestinationDevice._meta.db_table} IN ACCESS EXCLUSIVE MODE")
        request = threading.Thread(target=lambda: answers.append(web.get("/healthz", timeout_s=30).status))
        request.start()
        time.sleep(1.0)

        # When gunicorn is told to stop while it waits, and the lock goes a second later
        web.process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert not answers
    request.join(timeout=20)

    # Then the request got its answer, and gunicorn exited cleanly after it
    assert answers == [200]
    assert web.process.wait(timeout=20) == 0
    with pytest.raises(OSError):
        web.get("/healthz", timeout_s=2)
