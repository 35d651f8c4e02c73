"""Scrape time of /metrics against delivery logs of given sizes (issue 9, finding 8).

For each `--attempts` size it drops and recreates PostgreSQL database
`aamdest_bench_metrics`, migrates it, makes `--destinations` destinations and
bulk-inserts (one SQL statement each) half as many deliveries as attempts, two
attempts per delivery, plus `--pending` pending deliveries; then ANALYZE. When
the code keeps running totals (`delivery.counters.count_attempts`), it counts
the same attempts and ends there too, in bulk, so the scrape reads what a live
system would. It times one warm-up and then `--scrapes` scrapes through
Django's test client and prints the median, p95 and mean.

Usage: .venv/bin/python scripts/bench_metrics.py [--attempts 10000 1000000] [--scrapes 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import ROOT, bench_environment, reset_database  # noqa: E402 - the scripts folder

DATABASE_URL = "postgres://postgres@127.0.0.1:5432/aamdest_bench_metrics"
BROKER_URL = "redis://127.0.0.1:6379/6"
REASONS = ("status", "timeout", "connection")

DELIVERIES_SQL = """
INSERT INTO {deliveries}
       (destination_id, kind, status, document_id, body, user_count, created_at, finished_at)
SELECT %(first)s + i %% %(destinations)s, 'realtime',
       CASE WHEN i %% 10 = 0 THEN 'failed' ELSE 'delivered' END, gen_random_uuid(), '\\x7b7d'::bytea, 1,
       now() - make_interval(secs => i), now() - make_interval(secs => i)
FROM generate_series(1, %(n)s) AS i
"""
ATTEMPTS_SQL = """
INSERT INTO {attempts}
       (delivery_id, number, started_at, duration_ms, status_code, reason, error, response_excerpt)
SELECT d.id, k, d.created_at, (d.id * 37 + k * 101) % 4000,
       CASE WHEN k = 2 AND d.status = 'delivered' THEN 200 WHEN k = 1 AND d.id % 3 = 0 THEN 503 END,
       CASE WHEN k = 2 AND d.status = 'delivered' THEN NULL
            ELSE (ARRAY['status', 'timeout', 'connection'])[1 + d.id % 3] END,
       '', ''
FROM {deliveries} AS d CROSS JOIN generate_series(1, 2) AS k
"""
PENDING_SQL = """
INSERT INTO {deliveries}
       (destination_id, kind, status, document_id, body, user_count, created_at, lease_until)
SELECT %(first)s + i %% %(destinations)s, 'realtime', 'pending', gen_random_uuid(), '\\x7b7d'::bytea, 1,
       now(), now() + interval '1 minute'
FROM generate_series(1, %(n)s) AS i
"""


def configure() -> None:
    os.environ.update(bench_environment(database_url=DATABASE_URL, broker_url=BROKER_URL))
    os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aamdest.settings")
    sys.path.insert(0, str(ROOT))
    import django  # noqa: PLC0415 - Django is set up after the environment is

    django.setup()


def fill(*, attempts: int, destinations: int, pending: int) -> None:
    """A fresh database with `attempts` attempts in its log; the running totals, when kept, agree."""
    from django.core.management import call_command  # noqa: PLC0415 - after django.setup()
    from django.db import connection, connections  # noqa: PLC0415

    from delivery.coordination import counters_client  # noqa: PLC0415
    from delivery.models import Attempt, Delivery  # noqa: PLC0415
    from destinations.models import Destination  # noqa: PLC0415

    connections.close_all()
    reset_database(DATABASE_URL)
    counters_client().flushdb()
    call_command("migrate", "--noinput", verbosity=0)
    made = [
        Destination.objects.create(name=f"partner-{index}", url="https://127.0.0.1:9/", client_id="c",
                                   user_dpid=1, aam_destination_id=index)
        for index in range(destinations)
    ]
    tables = {"deliveries": Delivery._meta.db_table, "attempts": Attempt._meta.db_table}
    params = {"first": made[0].pk, "destinations": destinations}
    with connection.cursor() as cursor:
        cursor.execute(DELIVERIES_SQL.format(**tables), {**params, "n": attempts // 2})
        cursor.execute(ATTEMPTS_SQL.format(**tables))
        cursor.execute(PENDING_SQL.format(**tables), {**params, "n": pending})
        cursor.execute("ANALYZE")
    count_totals()


def count_totals() -> None:
    """Feed the running totals what the log holds, when this version of the code keeps them."""
    from django.db.models import Count  # noqa: PLC0415 - after django.setup()

    from delivery import counters  # noqa: PLC0415
    from delivery.models import Attempt, Delivery  # noqa: PLC0415

    if not hasattr(counters, "count_attempts"):
        return
    rows = Attempt.objects.values_list("delivery__destination_id", "reason", "duration_ms")
    rows = rows.annotate(n=Count("id"))
    by_destination: dict[int, list[tuple[str, int]]] = {}
    for destination_id, reason, duration_ms, n in rows.order_by():
        by_destination.setdefault(destination_id, []).extend([(reason or "ok", duration_ms)] * n)
    for destination_id, tallied in by_destination.items():
        counters.count_attempts(destination_id=destination_id, attempts=tallied)
    ended = Delivery.objects.exclude(status="pending").values_list("destination_id", "status")
    ended = ended.annotate(n=Count("id"))
    for destination_id, status, n in ended.order_by():
        counters.count_finished_deliveries(destination_id=destination_id, outcomes=[status] * n)


def time_scrapes(scrapes: int) -> list[float]:
    """Milliseconds per scrape, after one warm-up scrape."""
    from django.test import Client  # noqa: PLC0415 - after django.setup()

    client = Client()
    durations = []
    for index in range(scrapes + 1):
        started = time.perf_counter()
        response = client.get("/metrics", secure=True)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(f"/metrics answered {response.status_code}: {response.content[:200]!r}")
        if index:
            durations.append(elapsed_ms)
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--destinations", type=int, default=20)
    parser.add_argument("--pending", type=int, default=200)
    args = parser.parse_args()
    configure()
    for attempts in args.attempts:
        started = time.perf_counter()
        fill(attempts=attempts, destinations=args.destinations, pending=args.pending)
        print(f"{attempts:>9} attempts: filled in {time.perf_counter() - started:.1f} s", flush=True)
        durations = time_scrapes(args.scrapes)
        p95 = statistics.quantiles(durations, n=20)[-1] if len(durations) > 1 else durations[0]
        median = statistics.median(durations)
        print(f"{attempts:>9} attempts: {args.scrapes} scrapes, median {median:.1f} ms, "
              f"p95 {p95:.1f} ms, mean {statistics.fmean(durations):.1f} ms", flush=True)


if __name__ == "__main__":
    main()
