"""`scripts/bench.py --rate N`: real-time latency at a steady rate, alone and beside a big batch (issue 12).

bench.py's stack (`--web`; beat; the receiver and its ack log) with the worker nodes of
docs/DEPLOY.md: one `-Q realtime`, one `-Q batch,maintenance`. It seeds a batch-only
destination with `--batch-devices` [1,000,000] memberships (in SQL, as bench_batch.py),
warms up, then paces `--rate` events/s (`--per-post` a POST, each qualifying a new device,
10 users a request) for `--duration` s: (1) no batch running; (2) beside the batch, queued
(`send_batch_now`) `--batch-lead-s` before. `--json PATH` writes the figures (make bench).

Latency: from an event's scheduled send time (a slow web server counts against it) to
the partner's acknowledgement of its device; p50/p90/p99/max per phase, with the load.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import ROOT, Children, bench_environment, interrupt, load_average  # noqa: E402 - scripts folder

BATCH_SEGMENTS, DPID = (20001, 20002, 20003, 20004), 20914


def say(line: str) -> None:
    print(f"bench-rate | {line}", flush=True)


def add_rate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, help="Events/s: the paced latency mode (bench_rate.py).")
    parser.add_argument("--duration", type=float, default=30, help="--rate: seconds each phase paces events.")
    parser.add_argument("--per-post", type=int, default=100, help="--rate: events a POST.")
    parser.add_argument("--batch-devices", type=int, default=1_000_000,
                        help="--rate: memberships in the batch cut beside the second phase; 0: none.")
    parser.add_argument("--batch-lead-s", type=float, default=5, help="--rate: batch start to second phase.")
    parser.add_argument("--json", type=Path, help="--rate: the figures, as JSON.")


# --- in a child process (Django set up): seed and start the batch ------------------------------


def child_main(argv: list[str]) -> int:
    from bench_batch import setup_django

    setup_django()
    command, *rest = argv
    result = seed_batch(devices=int(rest[0])) if command == "seed" else start_batch(int(rest[0]))
    print(json.dumps(result), flush=True)
    return 0


def seed_batch(*, devices: int) -> dict[str, int]:
    """A batch-only destination beside seed_demo's (its URL, its HMAC key), and `devices` memberships."""
    from bench_batch import GENERATE
    from django.db import connection

    from destinations.models import Destination, Mapping, Segment

    demo_id, demo_url = Destination.objects.filter(aam_destination_id=423).values_list("pk", "url").get()
    batch = Destination.objects.create(
        name="bench-batch", url=demo_url, client_id="74323", user_dpid=DPID, aam_destination_id=424,
        realtime=False, batch_interval_hours=None, max_users_per_request=10_000,
        timeout_ms=30_000,  # a 10,000-user document takes seconds to verify on a loaded machine
    )
    for segment_id in BATCH_SEGMENTS:
        Segment.objects.create(id=segment_id, name=f"batch segment {segment_id}")
        Mapping.objects.create(destination=batch, segment_id=segment_id, value=str(segment_id),
                               start_date="2000-01-01")
    with connection.cursor() as cursor:
        # The key as stored (encrypted with the stack's keys, which this process need not have).
        cursor.execute("""UPDATE destinations_destination AS batch SET auth_mode = demo.auth_mode,
                              signing_algorithm = demo.signing_algorithm,
                              signing_header = demo.signing_header, signing_key = demo.signing_key
                          FROM destinations_destination AS demo WHERE demo.id = %s AND batch.id = %s""",
                       [demo_id, batch.pk])
        for statement in GENERATE:
            cursor.execute(statement, {"devices": devices, "segments": list(BATCH_SEGMENTS), "dpid": DPID})
    return {"destination_id": batch.pk}


def start_batch(destination_id: int) -> dict[str, int]:
    """Turn batch mode on and queue `send_batch_now` for the batch node."""
    from delivery.tasks import send_batch_now
    from destinations.models import Destination

    Destination.objects.filter(pk=destination_id).update(batch_interval_hours=24)
    send_batch_now.delay(destination_id)
    return {"destination_id": destination_id}


def child(step: list[str], *, env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *step], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- pacing and acknowledgements -----------------------------------------------------------------


@dataclass
class Phase:
    name: str
    prefix: str
    scheduled_at: dict[int, float] = field(default_factory=dict)  # post number -> its wall-clock slot
    errors: list[str] = field(default_factory=list)
    load: str = ""
    behind_s: float = 0.0  # how late the last POST started against its slot


def pace(*, api_url: str, token: str, phase: Phase, rate: float, duration_s: float, per_post: int) -> None:
    """POST `per_post` events every `per_post / rate` seconds for `duration_s`, from a pool of clients."""
    local, period = threading.local(), per_post / rate
    posts = max(1, int(rate * duration_s / per_post))

    def post(number: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = [{"type": "qualification", "aam_uuid": f"{phase.prefix}-{number * per_post + index:08d}",
                 "segment_id": 14356, "regions": [7], "datetime": now} for index in range(per_post)]
        phase.behind_s = max(phase.behind_s, time.time() - phase.scheduled_at[number])
        response = session.post(api_url, json=body, timeout=60, headers={"Authorization": f"Token {token}"})
        if response.status_code != 202:
            phase.errors.append(f"POST {number}: {response.status_code} {response.text[:200]}")

    with ThreadPoolExecutor(max_workers=32) as pool:
        start_wall, start = time.time(), time.monotonic()
        for number in range(posts):
            time.sleep(max(0.0, start + number * period - time.monotonic()))
            phase.scheduled_at[number] = start_wall + number * period
            pool.submit(post, number)
    phase.load = load_average()


class Acks:
    """The receiver's ack log as it grows: first acknowledgement per paced device; batch users counted."""

    def __init__(self, path: Path, *, offset: int) -> None:
        self.path, self.offset = path, offset
        self.first_ack: dict[str, float] = {}
        self.batch_first_ack = 0.0  # the batch's cut is over by then

    def read_new(self) -> None:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode().splitlines():
            at, aam_uuid = line.split()
            if aam_uuid[0].isdigit():  # the batch's devices are numbers, the paced ones prefixed
                self.batch_first_ack = self.batch_first_ack or float(at)
            else:
                self.first_ack.setdefault(aam_uuid, float(at))

    def latencies(self, phase: Phase, *, per_post: int) -> tuple[list[float], int]:
        """The phase's latencies, and how many of its devices are not acknowledged (yet)."""
        devices = [(f"{phase.prefix}-{number * per_post + index:08d}", at)
                   for number, at in phase.scheduled_at.items() for index in range(per_post)]
        found = [self.first_ack[aam_uuid] - at for aam_uuid, at in devices if aam_uuid in self.first_ack]
        return found, len(devices) - len(found)

    def wait(self, condition, *, deadline: float) -> bool:  # noqa: ANN001 - a predicate on self
        while time.monotonic() < deadline:
            self.read_new()
            if condition(self):
                return True
            time.sleep(0.5)
        return False


# --- the run --------------------------------------------------------------------------------------


def run_phase(stack, acks: Acks, phase: Phase, arguments: argparse.Namespace) -> None:  # noqa: ANN001
    say(f"{phase.name}: {arguments.rate:,.0f} events/s for {arguments.duration:.0f} s; load {load_average()}")
    pace(api_url=stack.api_url, token=stack.token, phase=phase, rate=arguments.rate,
         duration_s=arguments.duration, per_post=arguments.per_post)
    acks.wait(lambda read: read.latencies(phase, per_post=arguments.per_post)[1] == 0,
              deadline=time.monotonic() + arguments.give_up_s)


def measure(children: Children, arguments: argparse.Namespace) -> int:
    import bench  # bench.py's stack and warm-up (bench.py imports this module for --rate)

    stack = bench.start_stack(children, database_url=arguments.database_url, broker_url=arguments.broker_url,
                              web=arguments.web, queues=("realtime", "batch,maintenance"))
    env = bench_environment(database_url=arguments.database_url, broker_url=arguments.broker_url)
    batch: dict[str, float] = {}
    if arguments.batch_devices:
        say(f"seeding a batch destination with {arguments.batch_devices:,} memberships")
        started = time.monotonic()
        batch_id = child(["seed", str(arguments.batch_devices)], env=env)["destination_id"]
        say(f"seeded in {time.monotonic() - started:.0f} s; warming up with {arguments.warmup:,} events")
    offset = bench.warm_up(stack=stack, events=arguments.warmup, database_url=arguments.database_url,
                           deadline=time.monotonic() + arguments.give_up_s)
    acks = Acks(stack.ack_log, offset=offset)
    phases = [Phase("no batch running", "calm")]
    run_phase(stack, acks, phases[0], arguments)
    if arguments.batch_devices:
        phases.append(Phase(f"beside a batch of {arguments.batch_devices:,}", "busy"))
        child(["start-batch", str(batch_id)], env=env)
        batch["queued"] = time.time()
        time.sleep(arguments.batch_lead_s)
        batch["phase_start"] = time.time()
        run_phase(stack, acks, phases[1], arguments)
        batch["phase_end"] = max(phases[1].scheduled_at.values())
        batch.update(wait_for_batch(arguments))
        acks.read_new()  # the batch's first acknowledgement
    return report(phases, acks, arguments=arguments, batch=batch)


def wait_for_batch(arguments: argparse.Namespace) -> dict[str, float]:
    """Wait until the batch is cut and none of its requests is pending; what its requests became."""
    deadline = time.monotonic() + arguments.give_up_s
    with psycopg.connect(arguments.database_url, autocommit=True) as db:
        while True:
            requests_, pending, failed, users = db.execute(
                "SELECT count(*), count(*) FILTER (WHERE status = 'pending'), "
                "count(*) FILTER (WHERE status = 'failed'), coalesce(sum(user_count), 0) "
                "FROM delivery_delivery WHERE kind = 'batch'").fetchone()
            state = {"requests": requests_, "failed": failed, "users": users}
            if users >= arguments.batch_devices and not pending:
                return {**state, "ended": time.time()}
            if time.monotonic() > deadline:
                return state
            time.sleep(1)


def report(phases: list[Phase], acks: Acks, *, arguments: argparse.Namespace, batch: dict[str, float]) -> int:
    from bench import percentile

    lines = ["", f"aamdest bench --rate: {arguments.rate:,.0f} events/s, {arguments.per_post} events a POST, "
             f"{arguments.duration:.0f} s a phase, web {arguments.web}, one realtime node (-Q realtime, "
             "8 threads), one batch node (-Q batch,maintenance)",
             f"{'phase':<32} {'events':>8} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} {'lost':>6} "
             f"{'POSTs late':>10}  load (1, 5, 15 min)"]
    failed, figures = False, []
    for phase in phases:
        found, missing = acks.latencies(phase, per_post=arguments.per_post)
        failed = failed or bool(missing or phase.errors) or not found
        cells = [f"{percentile(found, q):6.2f}s" for q in (0.5, 0.9, 0.99)] if found else ["-"] * 3
        figures.append({"phase": phase.name, "rate": arguments.rate, "lost": missing, "load": phase.load} | {
            f"p{q}": round(percentile(found, q / 100), 3) if found else None for q in (50, 90, 99)})
        lines.append(f"{phase.name:<32} {len(found) + missing:>8,} {' '.join(cells)} "
                     f"{max(found, default=0):6.2f}s {missing:>6,} {phase.behind_s:9.2f}s  {phase.load}")
        lines += [f"  error: {error}" for error in phase.errors[:3]]
    if batch:
        done = "ended" in batch
        lines.append(f"batch: {batch['users']:,.0f} user objects in {batch['requests']:,.0f} requests "
                     f"({batch['failed']:,.0f} failed); first acknowledged "
                     f"{acks.batch_first_ack - batch['queued']:.0f} s after it was queued (its cut), "
                     + (f"all ended after {batch['ended'] - batch['queued']:.0f} s" if done else "not ended")
                     + f"; the second phase paced from {batch['phase_start'] - batch['queued']:.0f} s to "
                       f"{batch['phase_end'] - batch['queued']:.0f} s")
        failed = failed or not done
    print("\n".join(lines), flush=True)
    if arguments.json:
        arguments.json.write_text(json.dumps(figures[0] | {"phases": figures}))
    return 1 if failed else 0


def run_rate(arguments: argparse.Namespace) -> int:
    """The --rate mode of scripts/bench.py; its exit status."""
    from stack import reset_broker, reset_database

    signal.signal(signal.SIGTERM, interrupt)
    (ROOT / "var" / "bench").mkdir(parents=True, exist_ok=True)
    reset_broker(arguments.broker_url)
    reset_database(arguments.database_url)
    children = Children(announce=say)
    try:
        return measure(children, arguments)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        say(f"failed: {exc} {getattr(exc, 'stderr', '')[-3000:]}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        children.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(child_main(sys.argv[2:]))
    sys.exit("Run it as `scripts/bench.py --rate EVENTS_PER_S`.")
