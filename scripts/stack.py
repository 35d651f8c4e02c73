"""The processes of a local stack, for `make run` (run_demo.py) and `make bench` (bench.py, bench_batch.py).

Children started with prefixed output and stopped together, the database and Redis they need, and
the steps every stack takes: the reference partner (`manage.py receiver`), then migrate and seed_demo.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 15
COLORS = ("36", "33", "32", "35", "34", "31")
# Celery's lines for every task received or succeeded, and for the beat tick
# that runs every second (and the alert jobs every few), and gunicorn's access line for each accepted
# POST of the demo's event stream (which prints its own), would drown the deliveries; failures still show.
HIDDEN_LINE = re.compile(r"delivery-tick|delivery-alert|Task delivery\.tasks\.\w+\[[0-9a-f-]+\] "
                         r'(received|succeeded)|"POST /api/v1/events/ HTTP/1\.1" 202 ')


# --- output ------------------------------------------------------------------

_print_lock = threading.Lock()


def say(name: str, line: str, *, color: str = "1") -> None:
    prefix = f"{name:>8} |"
    if sys.stdout.isatty():
        prefix = f"\033[{color}m{prefix}\033[0m"
    with _print_lock:
        print(f"{prefix} {line}", flush=True)


def note(line: str) -> None:
    say("demo", line)


# --- child processes ---------------------------------------------------------


@dataclass
class Child:
    """A child process whose output is printed line by line under its name."""

    name: str
    process: subprocess.Popen
    color: str
    is_service: bool  # False: a one-off step (migrate, seed) expected to exit
    is_echoed: bool = True
    lines: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    pumping: threading.Thread | None = None

    def pump(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.rstrip("\n")
            if self.is_echoed and not HIDDEN_LINE.search(line):
                say(self.name, line, color=self.color)
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, text: str, *, timeout_s: float) -> str:
        """The first line holding `text`; RuntimeError when the child exits or time runs out first."""
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while True:
                found = next((line for line in self.lines if text in line), None)
                if found is not None:
                    return found
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with status {self.process.returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not print {text!r} within {timeout_s:.0f} s")
                self.changed.wait(timeout=0.5)


class Children:
    """Every child started, so that one call stops them all."""

    def __init__(self, *, announce: Callable[[str], None] = note) -> None:
        self.started: list[Child] = []
        self.announce = announce

    def start(
        self, name: str, argv: list[str], *, env: dict[str, str], is_service: bool = True,
        is_echoed: bool = True,
    ) -> Child:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
            # Its own process group: Ctrl-C reaches only this script, which
            # then stops the children in order, grandchildren included.
            start_new_session=True,
        )
        child = Child(name=name, process=process, color=COLORS[len(self.started) % len(COLORS)],
                      is_service=is_service, is_echoed=is_echoed)
        self.started.append(child)
        child.pumping = threading.Thread(target=child.pump, name=f"pump-{name}", daemon=True)
        child.pumping.start()
        self.announce(f"started {name} (pid {process.pid})")
        return child

    def run(self, name: str, argv: list[str], *, env: dict[str, str], is_echoed: bool = True) -> Child:
        """Start a child and wait for it to finish; RuntimeError when it fails."""
        child = self.start(name, argv, env=env, is_service=False, is_echoed=is_echoed)
        child.process.wait()
        if child.pumping:
            child.pumping.join(timeout=5)  # every line read, so callers may parse them
        if child.process.returncode != 0:
            for line in [] if is_echoed else child.lines:
                say(name, line, color=child.color)
            raise RuntimeError(f"{name} failed with status {child.process.returncode}")
        return child

    def exited(self) -> Child | None:
        """A service that stopped on its own, if any."""
        services = (child for child in self.started if child.is_service)
        return next((child for child in services if child.process.poll() is not None), None)

    def stop(self) -> None:
        running = [child for child in reversed(self.started) if child.process.poll() is None]
        for child in running:
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in running:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.announce(f"{child.name} did not stop within {STOP_TIMEOUT_S} s: killing it")
                _signal_group(child, signal.SIGKILL)
                child.process.wait()
        for child in running:
            # Grandchildren left in the group, if any; only groups of children
            # reaped just now, so that the group id cannot have been reused.
            _signal_group(child, signal.SIGKILL)
        self.announce("stopped everything")


def _signal_group(child: Child, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.process.pid, signum)


# --- the partner, migrate and seed ----------------------------------------------


def start_receiver(
    children: Children, *, env: dict[str, str], port: int, cert_dir: Path, timeout_s: float,
    options: Sequence[str] = (), is_echoed: bool = True,
) -> None:
    """Start `manage.py receiver` on `port`, wait until it listens, then make `env` trust its CA."""
    env.pop("AAMDEST_CA_BUNDLE", None)  # the receiver writes the CA the others will trust
    receiver = children.start("receiver", [
        sys.executable, "manage.py", "receiver", "--port", str(port), "--cert-dir", str(cert_dir), *options,
    ], env=env, is_echoed=is_echoed)
    receiver.wait_for("listening on", timeout_s=timeout_s)
    env["AAMDEST_CA_BUNDLE"] = str(cert_dir / "ca.pem")


def migrate_and_seed(
    children: Children, *, env: dict[str, str], signing_key: str, receiver_url: str,
    migrate_options: Sequence[str] = (),
) -> dict[str, Any]:
    """Migrate, run seed_demo against the receiver, and return what it made (its JSON line)."""
    python = sys.executable
    children.run("migrate", [python, "manage.py", "migrate", "--noinput", *migrate_options], env=env)
    seed = children.run("seed", [
        # "=": a key may start with "-"
        python, "manage.py", "seed_demo", "--json", f"--signing-key={signing_key}",
        "--receiver-url", receiver_url], env=env, is_echoed=False)
    return json.loads(next(line for line in seed.lines if line.startswith("{")))


# --- the web server --------------------------------------------------------------------


def web_server(kind: str, *, port: int, workers: int = 2) -> tuple[list[str], dict[str, str]]:
    """The command and extra environment of a web process on 127.0.0.1:`port`: gunicorn or runserver."""
    if kind == "runserver":
        return [sys.executable, "manage.py", "runserver", "--noreload", "--skip-checks",
                f"127.0.0.1:{port}"], {}
    return ([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "aamdest" / "gunicorn.conf.py")],
            {"AAMDEST_WEB_BIND": f"127.0.0.1:{port}", "AAMDEST_WEB_WORKERS": str(workers)})


# --- environment, database, broker, ports -------------------------------------------


def bench_environment(*, database_url: str, broker_url: str) -> dict[str, str]:
    """A production-like bench environment: no debug (Django would keep every query), explicit keys."""
    return {
        **os.environ,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(40),
        "AAMDEST_ENCRYPTION_KEYS": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "AAMDEST_ALLOW_PRIVATE_NETWORKS": "1",
        # The bench's web process speaks plain HTTP on loopback, with no TLS-terminating proxy.
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "AAMDEST_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }


def maintenance_url(url: str) -> str:
    """`url` naming the `postgres` database instead: where databases are created and dropped."""
    return urlunsplit(urlsplit(url)._replace(path="/postgres"))


def ensure_postgres_database(url: str) -> None:
    """Create the database named in `url` when it is missing (connecting to `postgres` to do so)."""
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(maintenance_url(url), autocommit=True, connect_timeout=3) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            note(f"created PostgreSQL database {name}")


def reset_database(url: str) -> None:
    """Drop and recreate the database named in `url`."""
    name = sql.Identifier(urlsplit(url).path.lstrip("/"))
    with psycopg.connect(maintenance_url(url), autocommit=True, connect_timeout=3) as db:
        db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        db.execute(sql.SQL("CREATE DATABASE {}").format(name))


def check_redis(url: str) -> None:
    """Exit with a message saying how to start Redis when it does not answer at `url`."""
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
    except redis.RedisError as exc:
        raise SystemExit(
            f"Redis does not answer at {url} ({exc}).\n"
            "Start it, then run `make run` again:\n"
            "    redis-server --daemonize yes --port 6379        (or: sudo systemctl start redis-server)\n"
            "    docker run -d -p 6379:6379 redis:7              (with Docker)\n"
            "or point CELERY_BROKER_URL at a Redis you have."
        ) from None


def reset_broker(url: str) -> None:
    check_redis(url)
    redis.Redis.from_url(url).flushdb()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_http(url: str, *, timeout_s: float) -> None:
    """Return once `url` answers at all (any status); RuntimeError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()  # noqa: S310 - our own http://127.0.0.1 URL
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def interrupt(signum: int, frame: Any) -> None:
    """A SIGTERM handler: stop as Ctrl-C does."""
    raise KeyboardInterrupt
