"""`make bench`, workload part: ingestion and delivery under gunicorn, synthetic or a realistic mix.

A stack of its own, as production runs it: PostgreSQL database `aamdest_bench_mix` (dropped and
recreated), Redis DB 10 (flushed), gunicorn with `aamdest/gunicorn.conf.py` (a process per core),
2 Celery workers (threads), beat, and the reference partner (`manage.py receiver`, HTTPS, kept-alive
connections, an ack log). seed_demo's destination and its four mapped segments, sending
`--users-per-request` users a request.

Workloads (`--workload`):
- `synthetic`: qualifications of distinct new devices in one segment (as `scripts/bench.py`): each
  event is one user object to deliver.
- `mix`: first a set-up, not measured: `--devices` devices, half of them with a partner ID
  (`id_sync`), each qualified into one to three of the four segments, delivered. Then the measured
  events, in turn: a re-qualification of a membership sent less than 3 days ago (sends nothing), a
  qualification (a new device, or a device into a segment it is not in) and a disqualification.

It reports events/s through `POST /api/v1/events/`, users/s delivered end to end (every device
that owes a send acknowledged by the partner), lost and duplicated deliveries, and the CPU
milliseconds per event of each process (`/proc`: gunicorn and its workers, the Celery workers,
beat, the receiver, and the PostgreSQL backends of the database), from the first POST to the
last acknowledgement, with the load average. `--json PATH` writes it for `scripts/bench_summary.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import AckLog  # noqa: E402 - the scripts folder
from cpu import total_cpu_seconds  # noqa: E402
from mix_workloads import Event, mix_events, mix_setup, synthetic  # noqa: E402
from stack import (  # noqa: E402
    ROOT,
    Children,
    bench_environment,
    free_port,
    interrupt,
    migrate_and_seed,
    reset_broker,
    reset_database,
    start_receiver,
    wait_for_http,
)

STATE = ROOT / "var" / "bench-mix"
DATABASE_URL = "postgres://postgres@127.0.0.1:5432/aamdest_bench_mix"
BROKER_URL = "redis://127.0.0.1:6379/10"
WORKERS = 2
STARTUP_TIMEOUT_S = 90


def say(line: str) -> None:
    print(f"bench-mix | {line}", flush=True)


@dataclass(frozen=True)
class Stack:
    api_url: str
    token: str
    ack_log: Path
    segments: list[int]
    pids: dict[str, list[int]]  # process kind → pids (the PostgreSQL backends are looked up apart)


def start_stack(children: Children, *, database_url: str, broker_url: str, users_per_request: int) -> Stack:
    python, web_port, receiver_port = sys.executable, free_port(), free_port()
    env = bench_environment(database_url=database_url, broker_url=broker_url)
    ack_log, signing_key = STATE / "acks.log", secrets.token_urlsafe(24)
    ack_log.unlink(missing_ok=True)
    start_receiver(children, env=env, port=receiver_port, cert_dir=STATE / "pki", timeout_s=STARTUP_TIMEOUT_S,
                   options=[f"--signing-key={signing_key}", "--ack-log", str(ack_log), "--summary-only"],
                   is_echoed=False)
    seeded = migrate_and_seed(children, env=env, signing_key=signing_key, migrate_options=["-v", "0"],
                              receiver_url=f"https://127.0.0.1:{receiver_port}/aam")
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute("UPDATE destinations_destination SET max_users_per_request = %s", (users_per_request,))
    web = children.start("web", [python, "-m", "gunicorn", "-c", "aamdest/gunicorn.conf.py"],
                         env={**env, "AAMDEST_WEB_BIND": f"127.0.0.1:{web_port}"}, is_echoed=False)
    workers = [
        children.start(f"worker{n}", [python, "-m", "celery", "-A", "aamdest", "worker", "--pool", "threads",
                                      "--concurrency", "8", "-l", "warning", "-n", f"mix{n}@%h"],
                       env=env, is_echoed=False)
        for n in range(1, WORKERS + 1)
    ]
    beat = children.start("beat", [python, "-m", "celery", "-A", "aamdest", "beat", "-l", "warning",
                                   "--schedule", str(STATE / "celerybeat-schedule")],
                          env=env, is_echoed=False)
    wait_for_http(f"http://127.0.0.1:{web_port}/healthz", timeout_s=STARTUP_TIMEOUT_S)
    receiver = next(child for child in children.started if child.name == "receiver")
    return Stack(api_url=f"http://127.0.0.1:{web_port}/api/v1/events/", token=seeded["api_token"],
                 ack_log=ack_log, segments=list(seeded["segment_ids"]),
                 pids={"web": [web.process.pid], "workers": [worker.process.pid for worker in workers],
                       "beat": [beat.process.pid], "receiver": [receiver.process.pid]})


# --- the measurement ------------------------------------------------------------------


def post_all(stack: Stack, events: list[Event], *, batch: int, clients: int) -> float:
    """POST `events` in batches from `clients` threads; return the seconds taken."""
    sessions: dict[int, requests.Session] = {}
    batches = [events[first:first + batch] for first in range(0, len(events), batch)]

    def post(body: list[Event]) -> None:
        session = sessions.setdefault(threading.get_ident(), requests.Session())
        response = session.post(stack.api_url, json=body, timeout=120,
                                headers={"Authorization": f"Token {stack.token}"})
        if response.status_code != 202:
            raise RuntimeError(f"POST: {response.status_code} {response.text[:300]}")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(post, batches))
    return time.perf_counter() - started


def wait_for(ack_log: AckLog, owed: set[str], *, deadline: float) -> None:
    last_report = 0.0
    while time.monotonic() < deadline:
        ack_log.read_new()
        if owed <= ack_log.first_ack.keys():
            return
        if time.monotonic() - last_report >= 5:
            say(f"{len(owed & ack_log.first_ack.keys()):,} of {len(owed):,} devices acknowledged")
            last_report = time.monotonic()
        time.sleep(0.2)


def postgres_backends(database_url: str) -> list[int]:
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(database_url, autocommit=True) as db:
        rows = db.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                          (name,)).fetchall()
    return [pid for (pid,) in rows]


def cpu_by_process(stack: Stack, backends: dict[int, float]) -> dict[str, float]:
    return {**{kind: total_cpu_seconds(pids) for kind, pids in stack.pids.items()},
            "postgres": sum(backends.values())}


def backend_cpu(database_url: str) -> dict[int, float]:
    """Each PostgreSQL backend of the database: its CPU seconds so far (connections live 60 s and more)."""
    return {pid: total_cpu_seconds([pid]) for pid in postgres_backends(database_url)}


def measure(stack: Stack, events: list[Event], owed: set[str], *, arguments: argparse.Namespace) -> dict:
    offset = stack.ack_log.stat().st_size if stack.ack_log.exists() else 0
    backends = backend_cpu(arguments.database_url)
    before, started = cpu_by_process(stack, backends), time.perf_counter()
    ingest_s = post_all(stack, events, batch=arguments.batch, clients=arguments.clients)
    ack_log = AckLog(stack.ack_log, offset=offset)
    wait_for(ack_log, owed, deadline=time.monotonic() + arguments.give_up_s)
    elapsed_s = time.perf_counter() - started
    # A backend opened during the measurement counts whole; one closed during it is missed.
    ended = backend_cpu(arguments.database_url)
    after = cpu_by_process(stack, {pid: cpu - backends.get(pid, 0.0) for pid, cpu in ended.items()})
    before["postgres"] = 0.0
    delivered = len(owed & ack_log.first_ack.keys())
    cpu_ms = {kind: round(1000 * (after[kind] - before[kind]) / len(events), 3) for kind in after}
    return {
        "workload": arguments.workload, "users_per_request": arguments.users_per_request,
        "events": len(events), "owed_devices": len(owed),
        "ingest_events_per_s": round(len(events) / ingest_s),
        "delivered_users_per_s": round(delivered / elapsed_s), "lost": len(owed) - delivered,
        # A device of the mix may rightly be sent twice (a qualification, then a disqualification).
        "duplicates": ack_log.acks - len(ack_log.first_ack) if arguments.workload == "synthetic" else None,
        "seconds": round(elapsed_s, 1),
        "cpu_ms_per_event": {**cpu_ms, "total": round(sum(cpu_ms.values()), 3)},
        "postgres_backends": len(ended), "load_average": [round(value, 2) for value in os.getloadavg()],
    }


def run(stack: Stack, arguments: argparse.Namespace) -> dict:
    rng = random.Random(13)
    segments = stack.segments
    if arguments.workload == "synthetic":
        warm, _ = synthetic(arguments.warmup, segment=segments[0])
        warm = [{**event, "aam_uuid": f"warm-{event['aam_uuid']}"} for event in warm]
        post_all(stack, warm, batch=arguments.batch, clients=1)
        wait_for(AckLog(stack.ack_log), {str(event["aam_uuid"]) for event in warm},
                 deadline=time.monotonic() + arguments.give_up_s)
        events, owed = synthetic(arguments.events, segment=segments[0])
    else:
        setup, memberships = mix_setup(arguments.devices, segments=segments, rng=rng)
        say(f"set-up: {len(setup):,} events for {arguments.devices:,} devices")
        post_all(stack, setup, batch=arguments.batch, clients=1)
        wait_for(AckLog(stack.ack_log), set(memberships), deadline=time.monotonic() + arguments.give_up_s)
        events, owed = mix_events(arguments.events, memberships=memberships, segments=segments, rng=rng)
    with psycopg.connect(arguments.database_url, autocommit=True) as db:
        db.execute("ANALYZE")
    say(f"measuring {len(events):,} events ({len(owed):,} devices owe a send)")
    return measure(stack, events, owed, arguments=arguments)


def report(result: dict) -> None:
    say(f"{result['workload']}, {result['users_per_request']} users/request: "
        f"{result['ingest_events_per_s']:,} events/s ingested, {result['delivered_users_per_s']:,} users/s "
        f"delivered end to end, lost {result['lost']}, duplicates {result['duplicates']}, "
        f"load {result['load_average']}")
    say("CPU ms per event: " + ", ".join(f"{kind} {ms}" for kind, ms in result["cpu_ms_per_event"].items()))


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=["synthetic", "mix"], default="mix")
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--devices", type=int, default=10_000, help="Devices set up first (mix).")
    parser.add_argument("--warmup", type=int, default=5_000, help="Events delivered first (synthetic).")
    parser.add_argument("--users-per-request", type=int, default=10)
    parser.add_argument("--batch", type=int, default=5_000, help="Events per POST.")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--give-up-s", type=float, default=300)
    parser.add_argument("--database-url", default=DATABASE_URL, help="Dropped and recreated!")
    parser.add_argument("--broker-url", default=BROKER_URL, help="Flushed!")
    parser.add_argument("--json", type=Path, help="Write the result there.")
    return parser.parse_args()


def main() -> int:
    arguments = parse_arguments()
    signal.signal(signal.SIGTERM, interrupt)
    STATE.mkdir(parents=True, exist_ok=True)
    reset_broker(arguments.broker_url)
    reset_database(arguments.database_url)
    children = Children(announce=say)
    try:
        stack = start_stack(children, database_url=arguments.database_url, broker_url=arguments.broker_url,
                            users_per_request=arguments.users_per_request)
        result = run(stack, arguments)
        report(result)
        if arguments.json:
            arguments.json.write_text(json.dumps(result, indent=2))
        return 1 if result["lost"] else 0
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except RuntimeError as exc:
        say(f"failed: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        children.stop()


if __name__ == "__main__":
    sys.exit(main())
