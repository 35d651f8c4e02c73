"""`make bench`: end-to-end throughput and latency of one destination, on this machine.

Its own stack: PostgreSQL database `aamdest_bench` (dropped, recreated), Redis DB 9
(flushed), the web server (`--web`: gunicorn, or runserver), 2 Celery worker processes,
beat, and `manage.py receiver` (HTTPS, HMAC-SHA256, "<time> <AAM_UUID>" per acknowledged
user in its `--ack-log`). One destination (seed_demo's, 10 users per request); each
event qualifies a distinct device in one mapped segment. After a warm-up (`--warmup`
events delivered, not counted, then ANALYZE) it POSTs `--events` events in batches of
`--batch` from `--clients` clients, waits for every acknowledgement, and prints events/s
ingested (and the load average), users/s delivered, p50/p99 latency from an event's
POST to its acknowledgement, and each worker's peak RSS. Exit status 1 when users are
lost (not acknowledged within `--give-up-s`) or ingestion fails; everything started is
stopped. `--rate N`: the paced latency mode instead (scripts/bench_rate.py).
"""

from __future__ import annotations

import argparse
import secrets
import signal
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rate import add_rate_arguments, run_rate  # noqa: E402 - the scripts folder
from memory import peak_rss_kib  # noqa: E402 - the scripts folder
from stack import (  # noqa: E402 - the scripts folder
    ROOT,
    Children,
    bench_environment,
    free_port,
    interrupt,
    load_average,
    migrate_and_seed,
    reset_broker,
    reset_database,
    start_receiver,
    wait_for_http,
    web_server,
)

STATE = ROOT / "var" / "bench"
DATABASE_URL = "postgres://postgres@127.0.0.1:5432/aamdest_bench"
BROKER_URL = "redis://127.0.0.1:6379/9"
SEGMENT_ID = 14356  # one of seed_demo's mapped segments
WORKERS = 2
STARTUP_TIMEOUT_S = 90


def say(line: str) -> None:
    print(f"bench | {line}", flush=True)


# --- the stack ------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    api_url: str
    token: str
    ack_log: Path
    workers: list[int]  # the worker processes' pids


def start_stack(children: Children, *, database_url: str, broker_url: str, web: str = "gunicorn",
                queues: tuple[str | None, ...] = (None,) * WORKERS) -> Stack:  # a worker per -Q (None: all)
    python, web_port, receiver_port = sys.executable, free_port(), free_port()
    env = bench_environment(database_url=database_url, broker_url=broker_url)
    ack_log, signing_key = STATE / "acks.log", secrets.token_urlsafe(24)
    ack_log.unlink(missing_ok=True)
    start_receiver(children, env=env, port=receiver_port, cert_dir=STATE / "pki", timeout_s=STARTUP_TIMEOUT_S,
                   options=[f"--signing-key={signing_key}", "--ack-log", str(ack_log), "--summary-only"],
                   is_echoed=False)
    seeded = migrate_and_seed(children, env=env, signing_key=signing_key, migrate_options=["-v", "0"],
                              receiver_url=f"https://127.0.0.1:{receiver_port}/aam")
    web_argv, web_env = web_server(web, port=web_port)
    children.start("web", web_argv, env={**env, **web_env}, is_echoed=False)
    workers = [
        children.start(f"worker{n}", [python, "-m", "celery", "-A", "aamdest", "worker", "--pool", "threads",
                                      "--concurrency", "8", "-l", "warning", "-n", f"bench{n}@%h",
                                      *(["-Q", queue] if queue else [])], env=env, is_echoed=False)
        for n, queue in enumerate(queues, 1)
    ]
    children.start("beat", [python, "-m", "celery", "-A", "aamdest", "beat", "-l", "warning",
                            "--schedule", str(STATE / "celerybeat-schedule")], env=env, is_echoed=False)
    wait_for_http(f"http://127.0.0.1:{web_port}/healthz", timeout_s=STARTUP_TIMEOUT_S)
    return Stack(api_url=f"http://127.0.0.1:{web_port}/api/v1/events/", token=seeded["api_token"],
                 ack_log=ack_log, workers=[worker.process.pid for worker in workers])


# --- the measurement --------------------------------------------------------------


def device_id(index: int, *, prefix: str = "bench") -> str:
    return f"{prefix}-{index:08d}"


@dataclass
class Ingestion:
    """When each batch's POST started and when its 202 came back."""

    started_at: dict[int, float] = field(default_factory=dict)
    answered_at: dict[int, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def ingest(*, stack: Stack, events: int, batch: int, clients: int, prefix: str = "bench") -> Ingestion:
    ingestion = Ingestion()
    local = threading.local()

    def post(first: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = [{"type": "qualification", "aam_uuid": device_id(index, prefix=prefix),
                 "segment_id": SEGMENT_ID, "regions": [7], "datetime": now}
                for index in range(first, min(first + batch, events))]
        ingestion.started_at[first] = time.time()
        response = session.post(stack.api_url, json=body, timeout=120,
                                headers={"Authorization": f"Token {stack.token}"})
        ingestion.answered_at[first] = time.time()
        if response.status_code != 202 or response.json().get("accepted") != len(body):
            ingestion.errors.append(f"batch {first}: {response.status_code} {response.text[:300]}")

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(post, range(0, events, batch)))
    return ingestion


class AckLog:
    """Reads the receiver's ack log as it grows: the first acknowledgement time per device."""

    def __init__(self, path: Path, *, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self.first_ack: dict[str, float] = {}
        self.acks = 0

    def read_new(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
        self.offset += len(complete)
        for line in complete.decode().splitlines():
            at, aam_uuid = line.split()
            self.acks += 1
            self.first_ack.setdefault(aam_uuid, float(at))


def wait_for_acks(*, ack_log: AckLog, events: int, deadline: float) -> None:
    last_report = 0.0
    while time.monotonic() < deadline:
        ack_log.read_new()
        if len(ack_log.first_ack) >= events:
            return
        if time.monotonic() - last_report >= 5:
            say(f"{len(ack_log.first_ack):,} of {events:,} users acknowledged")
            last_report = time.monotonic()
        time.sleep(0.2)


def warm_up(*, stack: Stack, events: int, database_url: str, deadline: float) -> int:
    """Deliver `events` throwaway devices, then ANALYZE; return the ack log offset the measurement starts at.

    Raises RuntimeError when the warm-up is not delivered before `deadline`.
    """
    if events > 0:
        warm = ingest(stack=stack, events=events, batch=min(events, 5_000), clients=1, prefix="warm")
        if warm.errors:
            raise RuntimeError(f"warm-up ingestion failed: {warm.errors[0]}")
        ack_log = AckLog(stack.ack_log)
        wait_for_acks(ack_log=ack_log, events=events, deadline=deadline)
        if len(ack_log.first_ack) < events:
            raise RuntimeError(f"warm-up: {len(ack_log.first_ack):,} of {events:,} users acknowledged")
    with psycopg.connect(database_url, autocommit=True, connect_timeout=3) as db:
        db.execute("ANALYZE")
    return stack.ack_log.stat().st_size if stack.ack_log.exists() else 0


# --- the report -----------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(
    *, events: int, batch: int, warmup: int, ingestion: Ingestion, ack_log: AckLog, rss_kib: list[int]
) -> int:
    """Print the table; return the exit status (1 when users were lost or ingestion failed)."""
    start = min(ingestion.started_at.values())
    ingested_s = max(ingestion.answered_at.values()) - start
    acked = {i: ack_log.first_ack[device_id(i)] for i in range(events) if device_id(i) in ack_log.first_ack}
    latencies = [at - ingestion.started_at[i - i % batch] for i, at in acked.items()]
    delivered = len(latencies)
    rows = [
        ("events", f"{events:,} qualifications of distinct devices, 1 segment, 1 destination"),
        ("requests", "10 users per request, HMAC-SHA256 signed, HTTPS with kept-alive connections"),
        ("warm-up", f"{warmup:,} other events delivered first, then ANALYZE (not counted)"),
        ("ingested", f"{events / ingested_s:,.0f} events/s ({ingested_s:.1f} s, batches of {batch:,})"),
    ]
    if latencies:
        elapsed_s = max(acked.values()) - start
        rows += [
            ("delivered", f"{delivered / elapsed_s:,.0f} users/s end to end ({elapsed_s:.1f} s to last ack)"),
            ("latency p50", f"{percentile(latencies, 0.50):.2f} s  (event POST start -> partner ack)"),
            ("latency p99", f"{percentile(latencies, 0.99):.2f} s"),
            ("latency mean", f"{statistics.fmean(latencies):.2f} s"),
        ]
    rows += [(f"worker {n} peak RSS", f"{kib / 1024:.0f} MiB (VmHWM)") for n, kib in enumerate(rss_kib, 1)]
    rows += [("lost users", f"{events - delivered:,}"), ("duplicates", f"{ack_log.acks - delivered:,}")]
    width = max(len(name) for name, _ in rows)
    print("\n".join(["", "aamdest bench", "-" * 72, *(f"{name:<{width}}  {value}" for name, value in rows)]))
    for error in ingestion.errors[:5]:
        print(f"ingestion error: {error}")
    return 1 if delivered < events or ingestion.errors else 0


# --- main -----------------------------------------------------------------------------


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=5_000, help="Events per POST (at most 10,000).")
    parser.add_argument("--clients", type=int, default=4, help="Concurrent ingestion clients.")
    parser.add_argument("--warmup", type=int, default=5_000,
                        help="Events delivered (and not counted) before measuring; 0: a cold start.")
    parser.add_argument("--give-up-s", type=float, default=300, help="Measurement bound, in seconds.")
    parser.add_argument("--database-url", default=DATABASE_URL, help="Dropped and recreated!")
    parser.add_argument("--broker-url", default=BROKER_URL, help="Flushed!")
    parser.add_argument("--web", choices=("gunicorn", "runserver"), default="gunicorn")
    add_rate_arguments(parser)
    arguments = parser.parse_args()
    if not (arguments.events > 0 and 0 < arguments.batch <= 10_000 and arguments.clients > 0
            and arguments.warmup >= 0):
        parser.error("--events, --batch (1..10000) and --clients must be positive, --warmup at least 0")
    return arguments


def main() -> int:
    arguments = parse_arguments()
    return run_rate(arguments) if arguments.rate else run_bench(arguments)


def run_bench(arguments: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, interrupt)
    STATE.mkdir(parents=True, exist_ok=True)
    reset_broker(arguments.broker_url)
    reset_database(arguments.database_url)
    children = Children(announce=say)
    try:
        stack = start_stack(children, database_url=arguments.database_url, broker_url=arguments.broker_url,
                            web=arguments.web)
        say(f"stack up; warming up with {arguments.warmup:,} events")
        offset = warm_up(stack=stack, events=arguments.warmup, database_url=arguments.database_url,
                         deadline=time.monotonic() + arguments.give_up_s)
        say(f"ingesting {arguments.events:,} events through {arguments.web}; load average {load_average()}")
        deadline = time.monotonic() + arguments.give_up_s
        ingestion = ingest(
            stack=stack, events=arguments.events, batch=arguments.batch, clients=arguments.clients
        )
        ack_log = AckLog(stack.ack_log, offset=offset)
        if not ingestion.errors:  # with events refused, waiting for all of them is pointless
            wait_for_acks(ack_log=ack_log, events=arguments.events, deadline=deadline)
        ack_log.read_new()
        rss = [peak_rss_kib(pid) for pid in stack.workers]
        if stopped := children.exited():
            raise RuntimeError(f"{stopped.name} exited with status {stopped.process.returncode}")
        return report(events=arguments.events, batch=arguments.batch, warmup=arguments.warmup,
                      ingestion=ingestion, ack_log=ack_log, rss_kib=rss)
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
