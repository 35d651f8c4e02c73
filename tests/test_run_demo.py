"""`make run` (scripts/run_demo.py): deliveries reach the receiver in time; stopping leaves nothing.

The demo runs with this test session's broker, a database of its own named
after the test database (`demo_<name>`) and free ports, so that it collides
with neither a developer's `make run` nor other test sessions.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from tests.ports import free_port

PROJECT = Path(__file__).resolve().parent.parent
DELIVERY_BOUND_S = 90
STARTED = re.compile(r"started (\w+) \(pid (\d+)\)")



def demo_database_url(tmp_path: Path) -> str:
    test_url = os.environ.get("DATABASE_URL", "")
    if not test_url.startswith(("postgres://", "postgresql://")):
        return f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    parts = urlsplit(test_url)
    return urlunsplit(parts._replace(path=f"/demo_{parts.path.lstrip('/')}"))


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


class Output:
    """The demo's output lines, collected by a thread."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, *, timeout_s: float) -> str | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = next((line for line in list(self.lines) if re.search(pattern, line)), None)
            if found or not self.thread.is_alive():
                return found
            time.sleep(0.5)
        return None

    def child_pids(self) -> dict[str, int]:
        return {match[1]: int(match[2]) for line in self.lines if (match := STARTED.search(line))}


@pytest.mark.e2e
@pytest.mark.demo
@pytest.mark.timeout(DELIVERY_BOUND_S + 60)
def test_make_run_delivers_sample_events_to_the_receiver_then_stops_every_process(tmp_path):
    broker_url = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    web_port = free_port()
    environment = {
        **os.environ, "DATABASE_URL": demo_database_url(tmp_path), "CELERY_BROKER_URL": broker_url,
        "AAMDEST_DEMO_PORT": str(web_port), "AAMDEST_DEMO_RECEIVER_PORT": str(free_port()),
        "AAMDEST_DEMO_PASSWORD": "demo-test-password",
    }
    process = subprocess.Popen(
        [sys.executable, "scripts/run_demo.py"], cwd=PROJECT, env=environment, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    output = Output(process)
    try:
        accepted = output.wait_for(r"receiver \| accepted delivery", timeout_s=DELIVERY_BOUND_S)
        static = {path: fetch(f"http://127.0.0.1:{web_port}{path}") for path in STATIC_FILES}
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        output.thread.join(timeout=5)
        still_running = [name for name, pid in output.child_pids().items() if is_alive(pid)]
    finally:
        _stop_leftovers(process, output)
        # The demo's queued tasks and locks must not reach later tests sharing this broker.
        redis.Redis.from_url(broker_url).flushdb()

    text = "\n".join(output.lines)
    assert accepted, f"no delivery reached the receiver within {DELIVERY_BOUND_S} s:\n{text[-6000:]}"
    assert re.search(r"AAM_Destination_Id 423 User_count [1-9]", accepted)
    assert "login admin / demo-test-password" in text
    assert set(output.child_pids()) >= {"receiver", "web", "worker", "beat", "events"}
    # The web process is gunicorn with the project's configuration, on loopback, serving its static files.
    assert re.search(rf"web \| .*Listening at: http://127\.0\.0\.1:{web_port} ", text), text[-3000:]
    assert re.search(r"web \| .*Using worker: gthread", text)
    assert "runserver" not in text
    assert static == dict.fromkeys(STATIC_FILES, (200, "text/css")), static
    assert process.returncode == 0, text[-3000:]
    assert "stopped everything" in text
    assert still_running == []


STATIC_FILES = ("/static/console/console.css", "/static/admin/css/base.css")


def fetch(url: str) -> tuple[int, str]:
    """The status and content type of a GET."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get_content_type()


def _stop_leftovers(process: subprocess.Popen, output: Output) -> None:
    """Kill whatever this test started that is still running (only when the test failed)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    for pid in output.child_pids().values():
        if is_alive(pid):
            os.killpg(pid, signal.SIGKILL)
