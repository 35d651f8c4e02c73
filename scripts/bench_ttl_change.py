"""A segment TTL change with a million members: how long the API call and its task take.

It sets up, from scratch, PostgreSQL database `aamdest_bench_ttl` (dropped,
recreated, migrated) and Redis DB 11 (flushed, the broker the API queues on),
then generates `--members` (1,000,000) devices, each an active member of one
segment (TTL 120 days), in SQL with `generate_series`.

Then it times, in this process:
1. `PATCH /api/v1/segments/{id}/ {"ttl_days": 30}` through DRF's test client
   (Django's, with a forced login): validation, the save, the audit entry and
   queueing `delivery.tasks.apply_segment_ttl_change` on commit;
2. that task, run here as a worker would run it: every member's `expires_at`
   moved, in chunks of `delivery.lifecycle.expiry.CHUNK_SIZE` devices.
It prints both figures and exits with status 1 when a member was not moved or
the PATCH did not queue exactly one task.

    .venv/bin/python -W ignore::UserWarning scripts/bench_ttl_change.py [--members 1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import django
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import ROOT, bench_environment, reset_broker, reset_database  # noqa: E402 - the scripts folder

DATABASE_URL = "postgres://postgres@127.0.0.1:5432/aamdest_bench_ttl"
BROKER_URL = "redis://127.0.0.1:6379/11"
# Django reads its settings from the environment: set it before anything imports them.
os.environ.update(bench_environment(database_url=DATABASE_URL, broker_url=BROKER_URL))
os.environ["DJANGO_SETTINGS_MODULE"] = "aamdest.settings"
sys.path.insert(0, str(ROOT))
django.setup()

from django.contrib.auth.models import User  # noqa: E402 - Django is set up above
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import F  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from delivery.models import Membership  # noqa: E402
from delivery.tasks import apply_segment_ttl_change  # noqa: E402
from destinations.models import Segment  # noqa: E402

SEGMENT_ID = 14356
NEW_TTL_DAYS = 30

GENERATE = [
    """INSERT INTO delivery_device (aam_uuid, last_seen, regions, created_at)
       SELECT lpad(i::text, 38, '0'), now() - interval '1 hour', '[]'::jsonb, now()
       FROM generate_series(1, %(members)s) AS i""",
    """INSERT INTO delivery_membership (device_id, segment_id, is_active, datetime, qualified_at,
                                        expires_at, updated_at)
       SELECT lpad(i::text, 38, '0'), %(segment)s, TRUE, now() - interval '1 hour', now() - interval '1 hour',
              now() + interval '119 days', now()
       FROM generate_series(1, %(members)s) AS i""",
    "ANALYZE",
]


def say(line: str) -> None:
    print(f"bench-ttl | {line}", flush=True)


def prepare(*, members: int) -> None:
    """A fresh database (migrated) and broker, then the members, generated in SQL."""
    reset_database(DATABASE_URL)
    reset_broker(BROKER_URL)
    call_command("migrate", verbosity=0)
    Segment.objects.create(id=SEGMENT_ID, name="bench", ttl_days=120)
    started = time.monotonic()
    with connection.cursor() as cursor:
        for statement in GENERATE:
            cursor.execute(statement, {"members": members, "segment": SEGMENT_ID})
    say(f"{members:,} active members of segment {SEGMENT_ID} generated in {time.monotonic() - started:.1f} s")


def time_api_call() -> float:
    """Seconds the PATCH took; it must answer 200."""
    client = APIClient(HTTP_HOST="localhost")
    client.force_authenticate(User.objects.create_superuser("bench", "bench@example.com", "bench"))
    # Warm up (imports, URL resolution) with a read, so that the PATCH is timed as a live server runs it.
    client.get(f"/api/v1/segments/{SEGMENT_ID}/", secure=True)
    started = time.monotonic()
    response = client.patch(f"/api/v1/segments/{SEGMENT_ID}/", {"ttl_days": NEW_TTL_DAYS}, format="json",
                            secure=True)  # production settings redirect plain HTTP
    elapsed = time.monotonic() - started
    if response.status_code != 200:
        raise SystemExit(f"PATCH answered {response.status_code}: {response.content[:500]!r}")
    return elapsed


def time_task() -> tuple[float, int]:
    """Seconds the queued task took, run here as a worker runs it, and the members it moved."""
    started = time.monotonic()
    apply_segment_ttl_change(SEGMENT_ID)
    elapsed = time.monotonic() - started
    moved = Membership.objects.filter(
        segment_id=SEGMENT_ID, expires_at=F("qualified_at") + dt.timedelta(days=NEW_TTL_DAYS)
    ).count()
    return elapsed, moved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    arguments = parser.parse_args()
    prepare(members=arguments.members)
    api_s = time_api_call()
    queued = queued_tasks()
    say(f"PATCH ttl_days {NEW_TTL_DAYS}: {api_s * 1000:.0f} ms (tasks queued on the broker: {queued})")
    task_s, moved = time_task()
    say(f"task apply_segment_ttl_change: {task_s:.1f} s, {moved:,} of {arguments.members:,} members moved")
    return 0 if moved == arguments.members and queued == 1 else 1


def queued_tasks() -> int:
    """How many messages wait on the broker's `maintenance` queue (Redis list)."""
    return int(redis.Redis.from_url(BROKER_URL).llen("maintenance"))


if __name__ == "__main__":
    sys.exit(main())
