"""`make run`: a whole local aamdest with a partner, so that deliveries arrive within a minute.

It picks the database (DATABASE_URL when set; else the local PostgreSQL when one
answers, creating the database `aamdest`; else a SQLite file and a single worker
process), checks Redis (CELERY_BROKER_URL, default redis://127.0.0.1:6379/0),
then starts, as child processes with prefixed output:

    receiver  manage.py receiver: the HTTPS partner, verifying the demo's HMAC key
    web       gunicorn -c aamdest/gunicorn.conf.py, as in production (admin, API, dashboard;
              static files from whitenoise), on 127.0.0.1 only
    worker    celery -A aamdest worker
    beat      celery -A aamdest beat
    events    this script with --stream-events: sample events through the API every 1.5 s

after migrating and seeding the demo (manage.py seed_demo). Ctrl-C or SIGTERM
stops them all. Ports: AAMDEST_DEMO_PORT [8000], AAMDEST_DEMO_RECEIVER_PORT [8443].
Demo state (certificates, beat schedule, SQLite file) lives in var/demo/.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import (  # noqa: E402 - the scripts folder
    ROOT,
    Children,
    check_redis,
    ensure_postgres_database,
    interrupt,
    migrate_and_seed,
    note,
    start_receiver,
    wait_for_http,
    web_server,
)

STATE = ROOT / "var" / "demo"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
LOCAL_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/aamdest"
STARTUP_TIMEOUT_S = 60
EVENT_PERIOD_S = 1.5
REGIONS = (3, 4, 6, 7, 8, 9, 11, 12)
SEGMENT_IDS = (14356, 12176, 10329, 10330)  # seed_demo's segments


# --- database ----------------------------------------------------------------


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
    signing_key = secrets.token_urlsafe(24)
    signing = f"--signing-key={signing_key}"  # "=": a key may start with "-"
    start_receiver(children, env=env, port=ports.receiver, cert_dir=STATE / "pki",
                   timeout_s=STARTUP_TIMEOUT_S, options=[signing])
    seeded = migrate_and_seed(children, env=env, signing_key=signing_key,
                              receiver_url=f"https://127.0.0.1:{ports.receiver}/aam")
    web, web_env = web_server("gunicorn", port=ports.web)
    # A graceful timeout within the demo's stop timeout.
    children.start("web", web, env={**env, **web_env, "AAMDEST_WEB_GRACEFUL_TIMEOUT_S": "10"})
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
    signal.signal(signal.SIGTERM, interrupt)  # SIGTERM stops the demo as Ctrl-C does
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
