"""`make run`: a whole local aamdest with a partner, so that deliveries arrive within a minute.

It picks the database (DATABASE_URL when set; else the local PostgreSQL when one
answers, creating the database `aamdest`; else a SQLite file and a single worker
process), checks Redis (CELERY_BROKER_URL, default redis://127.0.0.1:6379/0),
then starts, as child processes with prefixed output:

    receiver  manage.py receiver: the HTTPS partner, verifying the demo's HMAC key
    web       manage.py runserver --noreload (admin, API, dashboard)
    worker    celery -A aamdest worker
    beat      celery -A aamdest beat
    events    this script with --stream-events: sample events through the API every 1.5 s

after migrating and seeding the demo (manage.py seed_demo). Ctrl-C or SIGTERM
stops them all. Ports: AAMDEST_DEMO_PORT [8000], AAMDEST_DEMO_RECEIVER_PORT [8443].
Demo state (certificates, beat schedule, SQLite file) lives in var/demo/.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / "var" / "demo"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
LOCAL_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/aamdest"
STARTUP_TIMEOUT_S = 60
STOP_TIMEOUT_S = 15
EVENT_PERIOD_S = 1.5
REGIONS = (3, 4, 6, 7, 8, 9, 11, 12)
SEGMENT_IDS = (14356, 12176, 10329, 10330)  # seed_demo's segments
COLORS = ("36", "33", "32", "35", "34", "31")
# Celery's lines for every task received or succeeded, and for the beat tick
# that runs every second, would drown the deliveries; failures still show.
HIDDEN_LINE = re.compile(r"delivery-tick|Task delivery\.tasks\.\w+\[[0-9a-f-]+\] (received|succeeded)")


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


# --- database and broker -----------------------------------------------------


def choose_database_url() -> str:
    """DATABASE_URL when set, else the local PostgreSQL when it answers, else a SQLite file."""
    configured = os.environ.get("DATABASE_URL", "").strip()
    if configured:
        if configured.startswith(("postgres://", "postgresql://")):
            ensure_postgres_database(configured)
        return configured
    try:
        ensure_postgres_database(LOCAL_POSTGRES_URL)
    except Exception as exc:  # noqa: BLE001 - any failure means "no usable local PostgreSQL"
        note(f"no local PostgreSQL ({str(exc).strip().splitlines()[0]}): using a SQLite file")
        return f"sqlite:///{STATE / 'aamdest.sqlite3'}"
    return LOCAL_POSTGRES_URL


def ensure_postgres_database(url: str) -> None:
    """Create the database named in `url` when it is missing (connecting to `postgres` to do so)."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(maintenance, autocommit=True, connect_timeout=3) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            note(f"created PostgreSQL database {name}")


def check_redis(url: str) -> None:
    """Exit with a message saying how to start Redis when it does not answer at `url`."""
    import redis

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


# --- the demo ----------------------------------------------------------------


@dataclass(frozen=True)
class Ports:
    web: int
    receiver: int


def read_ports() -> Ports:
    try:
        return Ports(web=int(os.environ.get("AAMDEST_DEMO_PORT", "8000")),
                     receiver=int(os.environ.get("AAMDEST_DEMO_RECEIVER_PORT", "8443")))
    except ValueError:
        raise SystemExit("AAMDEST_DEMO_PORT and AAMDEST_DEMO_RECEIVER_PORT must be port numbers.") from None


def base_environment(*, database_url: str, broker_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_DEBUG": "1",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        # The partner runs on this machine, so the demo lifts the private network ban.
        "AAMDEST_ALLOW_PRIVATE_NETWORKS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def start_stack(children: Children, *, ports: Ports, database_url: str, broker_url: str) -> dict[str, Any]:
    """Start every process of the demo and return what seed_demo made."""
    python = sys.executable
    env = base_environment(database_url=database_url, broker_url=broker_url)
    env.pop("AAMDEST_CA_BUNDLE", None)  # the receiver writes the CA the others will trust
    signing_key = secrets.token_urlsafe(24)
    receiver = children.start("receiver", [
        python, "manage.py", "receiver", "--port", str(ports.receiver), "--cert-dir", str(STATE / "pki"),
        f"--signing-key={signing_key}"], env=env)  # "=": a key may start with "-"
    receiver.wait_for("listening on", timeout_s=STARTUP_TIMEOUT_S)
    env["AAMDEST_CA_BUNDLE"] = str(STATE / "pki" / "ca.pem")
    children.run("migrate", [python, "manage.py", "migrate", "--noinput"], env=env)
    seed = children.run("seed", [
        python, "manage.py", "seed_demo", "--json", f"--signing-key={signing_key}",
        "--receiver-url", f"https://127.0.0.1:{ports.receiver}/aam"], env=env, is_echoed=False)
    seeded = json.loads(next(line for line in seed.lines if line.startswith("{")))
    children.start("web", [python, "manage.py", "runserver", "--noreload", f"127.0.0.1:{ports.web}"], env=env)
    children.start("worker", worker_command(database_url=database_url), env=env)
    children.start("beat", [python, "-m", "celery", "-A", "aamdest", "beat", "-l", "info",
                            "--schedule", str(STATE / "celerybeat-schedule")], env=env)
    wait_for_http(f"http://127.0.0.1:{ports.web}/healthz", timeout_s=STARTUP_TIMEOUT_S)
    stream_env = {**env, "AAMDEST_DEMO_API_URL": f"http://127.0.0.1:{ports.web}/api/v1/events/",
                  "AAMDEST_DEMO_TOKEN": seeded["api_token"]}
    children.start("events", [python, str(Path(__file__).resolve()), "--stream-events"], env=stream_env)
    return seeded


def worker_command(*, database_url: str) -> list[str]:
    # One process either way; SQLite takes one writer at a time, so fewer threads wait on its lock.
    concurrency = "8" if database_url.startswith(("postgres://", "postgresql://")) else "2"
    return [sys.executable, "-m", "celery", "-A", "aamdest", "worker", "--pool", "threads",
            "--concurrency", concurrency, "-l", "info", "-n", "demo@%h"]


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


def print_welcome(*, ports: Ports, seeded: dict[str, Any], database_url: str) -> None:
    web = f"http://127.0.0.1:{ports.web}"
    for line in [
        "aamdest demo is running. Deliveries show up in the receiver's lines within seconds.",
        f"  dashboard   {web}/dashboard/",
        f"  admin       {web}/admin/     login {seeded['username']} / {seeded['password']}",
        f"  API docs    {web}/api/docs/  header 'Authorization: Token {seeded['api_token']}'",
        f"  partner     https://127.0.0.1:{ports.receiver}/aam (manage.py receiver, HMAC-SHA256 signed)",
        f"  database    {database_url}",
        "  note        DJANGO_DEBUG=1 for the demo: development keys, never for production.",
        "Ctrl-C stops everything.",
    ]:
        note(line)


def run_demo() -> int:
    ports = read_ports()
    broker_url = os.environ.get("CELERY_BROKER_URL", "").strip() or DEFAULT_BROKER_URL
    check_redis(broker_url)
    STATE.mkdir(parents=True, exist_ok=True)
    database_url = choose_database_url()
    note("DJANGO_DEBUG=1: the demo runs in development mode (derived secret and encryption keys).")
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the demo as Ctrl-C does
    children = Children()
    try:
        seeded = start_stack(children, ports=ports, database_url=database_url, broker_url=broker_url)
        print_welcome(ports=ports, seeded=seeded, database_url=database_url)
        while True:
            time.sleep(0.5)
            if stopped := children.exited():
                raise RuntimeError(f"{stopped.name} exited with status {stopped.process.returncode}")
    except KeyboardInterrupt:
        note("stopping (Ctrl-C or SIGTERM)")
        return 0
    except RuntimeError as exc:
        note(f"stopping: {exc}")
        return 1
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        children.stop()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


# --- the sample event stream (this script with --stream-events) ---------------


class EventStream:
    """Plausible traffic: qualifications, some disqualifications of active segments, id_syncs."""

    def __init__(self, *, devices: int = 40) -> None:
        self.devices = [f"{random.randrange(10**37, 10**38)}" for _ in range(devices)]
        self.active: dict[str, set[int]] = {device: set() for device in self.devices}
        self.synced: set[str] = set()

    def next_batch(self, *, now: str) -> list[dict[str, Any]]:
        return [self._event(now=now) for _ in range(random.randint(3, 8))]

    def _event(self, *, now: str) -> dict[str, Any]:
        device = random.choice(self.devices)
        roll = random.random()
        if roll < 0.15 and device not in self.synced:
            self.synced.add(device)
            return {"type": "id_sync", "aam_uuid": device, "dpid": 20914, "dpuuid": str(uuid.uuid4()),
                    "datetime": now}
        if roll < 0.35 and self.active[device]:
            segment = random.choice(sorted(self.active[device]))
            self.active[device].discard(segment)
            return {"type": "disqualification", "aam_uuid": device, "segment_id": segment, "datetime": now}
        segment = random.choice(SEGMENT_IDS)
        self.active[device].add(segment)
        regions = sorted(random.sample(REGIONS, random.randint(1, 2)))
        return {"type": "qualification", "aam_uuid": device, "segment_id": segment, "regions": regions,
                "datetime": now}


def stream_events() -> int:
    url, token = os.environ["AAMDEST_DEMO_API_URL"], os.environ["AAMDEST_DEMO_TOKEN"]
    stream = EventStream()
    while True:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        events = stream.next_batch(now=now)
        kinds = ", ".join(f"{sum(e['type'] == kind for e in events)} {kind}"
                          for kind in ("qualification", "disqualification", "id_sync"))
        print(f"POST {len(events)} events ({kinds}): {post_events(url=url, token=token, events=events)}",
              flush=True)
        time.sleep(EVENT_PERIOD_S)


def post_events(*, url: str, token: str, events: list[dict[str, Any]]) -> str:
    request = urllib.request.Request(  # noqa: S310 - our own http://127.0.0.1 URL
        url, data=json.dumps(events).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Token {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return f"{response.status} {response.read().decode()[:200]}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read().decode(errors='replace')[:300]}"
    except OSError as exc:
        return f"no answer ({exc})"


if __name__ == "__main__":
    if sys.argv[1:] == ["--stream-events"]:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            sys.exit(stream_events())
        except KeyboardInterrupt:
            sys.exit(0)
    sys.exit(run_demo())
