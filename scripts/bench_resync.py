"""A resync of a million devices (CONTRACT §7): how long it takes to queue, and to send to a local receiver.

It starts a stack of its own: PostgreSQL database `aamdest_bench_resync` (dropped and
recreated), Redis DB 12 (flushed), the reference partner (`manage.py receiver` over HTTPS,
HMAC-verified, one "<time> <AAM_UUID>" line per acknowledged user with `--ack-log`),
seed_demo's destination (10 users per request), then `--devices` (1,000,000) devices generated
in SQL (`generate_series`, not through the API): each an active member of one mapped segment,
already sent to the destination an hour ago (so the 3-day refresh rule would hold them back;
a resync must not). Then the web server, 2 Celery worker processes (threads) and beat.

It times:
1. `POST /api/v1/destinations/{id}/resync/` (counting the devices, queueing the task);
2. queueing: from that POST until every device is marked (pending, or already claimed since):
   the `maintenance` task marking them in chunks of `delivery.realtime.resync.CHUNK_SIZE`;
3. sending: from that POST until the receiver acknowledged every device (the flushes start
   after the first chunk, alongside the marking).
It prints the figures with the load average beside them (a shared machine: say what else ran),
and exits with status 1 when a device was not acknowledged within `--give-up-s`. When the server
runs without autovacuum, it ANALYZEs the delivery tables every `ANALYZE_EVERY_S` as autovacuum
would: a delivery log that grew from nothing under stale statistics gets a cold start's plans
(the round end's next-piece subquery then scans every delivery of the destination), not a live
database's.

    .venv/bin/python scripts/bench_resync.py [--devices 1000000] [--database-url ...] [--broker-url ...]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from pathlib import Path

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import AckLog  # noqa: E402 - the scripts folder
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

STATE = ROOT / "var" / "bench-resync"
DATABASE_URL = "postgres://postgres@127.0.0.1:5432/aamdest_bench_resync"
BROKER_URL = "redis://127.0.0.1:6379/12"
SEGMENT_ID = 14356  # one of seed_demo's mapped segments
WORKERS = 2
STARTUP_TIMEOUT_S = 90
ANALYZE_EVERY_S = 30
ANALYZE = "ANALYZE delivery_delivery, delivery_deliverydevice, delivery_destinationdevice"

GENERATE = [
    """INSERT INTO delivery_device (aam_uuid, last_seen, regions, created_at)
       SELECT 'resync-' || lpad(i::text, 8, '0'), now() - interval '1 hour', '[7]'::jsonb, now()
       FROM generate_series(1, %(devices)s) AS i""",
    """INSERT INTO delivery_membership (device_id, segment_id, is_active, datetime, qualified_at,
                                        expires_at, updated_at)
       SELECT aam_uuid, %(segment)s, TRUE, now() - interval '1 hour', now() - interval '1 hour',
              now() + interval '119 days', now()
       FROM delivery_device WHERE aam_uuid LIKE 'resync-%%'""",
    """INSERT INTO delivery_destinationdevice (destination_id, device_id, pending_since, left_segment_ids,
                                               last_sent_at)
       SELECT %(destination)s, aam_uuid, NULL, '[]'::jsonb, now() - interval '1 hour'
       FROM delivery_device WHERE aam_uuid LIKE 'resync-%%'""",
    "ANALYZE",
]
MARKED = """SELECT count(*) FROM delivery_destinationdevice WHERE destination_id = %(destination)s
            AND (pending_since IS NOT NULL OR last_sent_at >= %(since)s)"""


def say(line: str) -> None:
    print(f"bench-resync | {line}", flush=True)


def load() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def generate(*, database_url: str, devices: int, destination_id: int) -> None:
    started = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as db:
        for statement in GENERATE:
            db.execute(statement, {"devices": devices, "segment": SEGMENT_ID, "destination": destination_id})
    say(f"{devices:,} devices, members of {SEGMENT_ID}, sent an hour ago: generated in "
        f"{time.monotonic() - started:.1f} s")


def start_stack(children: Children, *, arguments: argparse.Namespace) -> tuple[str, dict, Path]:
    """The receiver, seed, generated devices, web, workers and beat; return (web URL, seed, ack log)."""
    python, web_port, receiver_port = sys.executable, free_port(), free_port()
    env = bench_environment(database_url=arguments.database_url, broker_url=arguments.broker_url)
    ack_log, signing_key = STATE / "acks.log", secrets.token_urlsafe(24)
    ack_log.unlink(missing_ok=True)
    start_receiver(children, env=env, port=receiver_port, cert_dir=STATE / "pki", timeout_s=STARTUP_TIMEOUT_S,
                   options=[f"--signing-key={signing_key}", "--ack-log", str(ack_log), "--summary-only"],
                   is_echoed=False)
    seeded = migrate_and_seed(children, env=env, signing_key=signing_key, migrate_options=["-v", "0"],
                              receiver_url=f"https://127.0.0.1:{receiver_port}/aam")
    generate(database_url=arguments.database_url, devices=arguments.devices,
             destination_id=seeded["destination_id"])
    children.start("web", [python, "manage.py", "runserver", "--noreload", "--skip-checks",
                           f"127.0.0.1:{web_port}"], env=env, is_echoed=False)
    for n in range(1, WORKERS + 1):
        children.start(f"worker{n}", [python, "-m", "celery", "-A", "aamdest", "worker", "--pool", "threads",
                                      "--concurrency", "8", "-l", "warning", "-n", f"resync{n}@%h"],
                       env=env, is_echoed=False)
    children.start("beat", [python, "-m", "celery", "-A", "aamdest", "beat", "-l", "warning",
                            "--schedule", str(STATE / "celerybeat-schedule")], env=env, is_echoed=False)
    wait_for_http(f"http://127.0.0.1:{web_port}/healthz", timeout_s=STARTUP_TIMEOUT_S)
    return f"http://127.0.0.1:{web_port}", seeded, ack_log


def measure(*, arguments: argparse.Namespace, web: str, seeded: dict, ack_log: Path) -> int:
    destination_id, devices = seeded["destination_id"], arguments.devices
    say(f"stack up, {load()}; POST resync/")
    with psycopg.connect(arguments.database_url, autocommit=True) as db:
        since = db.execute("SELECT now()").fetchone()[0]
    started = time.monotonic()
    response = requests.post(f"{web}/api/v1/destinations/{destination_id}/resync/", json={}, timeout=300,
                             headers={"Authorization": f"Token {seeded['api_token']}"})
    answered_s = time.monotonic() - started
    if response.status_code != 202 or response.json() != {"devices": devices}:
        raise RuntimeError(f"resync answered {response.status_code}: {response.text[:300]}")
    say(f"POST answered 202 {response.json()} in {answered_s * 1000:.0f} ms, {load()}")
    acks, queued_s, deadline = AckLog(ack_log), None, started + arguments.give_up_s
    last_report = last_analyze = time.monotonic()
    with psycopg.connect(arguments.database_url, autocommit=True) as db:
        emulates_autovacuum = db.execute("SHOW autovacuum").fetchone()[0] == "off"
        while time.monotonic() < deadline:
            acks.read_new()
            if emulates_autovacuum and time.monotonic() - last_analyze >= ANALYZE_EVERY_S:
                db.execute(ANALYZE)
                last_analyze = time.monotonic()
            if queued_s is None and db.execute(MARKED, {"destination": destination_id, "since": since}
                                               ).fetchone()[0] >= devices:
                queued_s = time.monotonic() - started
                say(f"queued: every device marked after {queued_s:.1f} s, {load()}")
            if len(acks.first_ack) >= devices:
                break
            if time.monotonic() - last_report >= 15:
                say(f"{len(acks.first_ack):,} of {devices:,} acknowledged, {load()}")
                last_report = time.monotonic()
            time.sleep(1)
    sent_s = time.monotonic() - started
    return report(devices=devices, answered_s=answered_s, queued_s=queued_s, sent_s=sent_s, acks=acks)


def report(*, devices: int, answered_s: float, queued_s: float | None, sent_s: float, acks: AckLog) -> int:
    delivered = len(acks.first_ack)
    rows = [
        ("devices", f"{devices:,}, each active in 1 mapped segment, sent an hour ago (no refresh due)"),
        ("requests", "10 users per request, HMAC-SHA256 signed, HTTPS, 2 workers x 8 threads"),
        ("POST resync/", f"{answered_s * 1000:.0f} ms (counts the devices, queues the task)"),
        ("queued", f"{queued_s:.1f} s until every device was marked" if queued_s else "not finished"),
        ("sent", f"{sent_s:.1f} s until the last acknowledgement ({delivered / sent_s:,.0f} users/s)"),
        ("lost devices", f"{devices - delivered:,}"),
        ("duplicates", f"{acks.acks - delivered:,}"),
        ("at the end", load()),
    ]
    width = max(len(name) for name, _ in rows)
    lines = (f"{name:<{width}}  {value}" for name, value in rows)
    print("\n".join(["", "aamdest resync bench", "-" * 72, *lines]))
    return 0 if delivered >= devices else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--give-up-s", type=float, default=3600, help="Measurement bound, in seconds.")
    parser.add_argument("--database-url", default=DATABASE_URL, help="Dropped and recreated!")
    parser.add_argument("--broker-url", default=BROKER_URL, help="Flushed!")
    arguments = parser.parse_args()
    signal.signal(signal.SIGTERM, interrupt)
    STATE.mkdir(parents=True, exist_ok=True)
    reset_broker(arguments.broker_url)
    reset_database(arguments.database_url)
    children = Children(announce=say)
    try:
        web, seeded, ack_log = start_stack(children, arguments=arguments)
        return measure(arguments=arguments, web=web, seeded=seeded, ack_log=ack_log)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except RuntimeError as exc:
        say(f"failed: {exc}")
        for child in children.started:
            for line in child.lines[-15:]:
                print(f"{child.name:>8} | {line}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        children.stop()


if __name__ == "__main__":
    sys.exit(main())
