"""`make bench`, batch part: one batch of a million memberships, its time and peak memory.

It sets up, from scratch:
- PostgreSQL database `aamdest_bench_batch` (dropped, recreated, migrated);
- `--devices` devices (1,000,000), each active in one of four mapped segments,
  every other one with a partner ID in the destination's namespace, with their
  `MembershipChange` rows as ingestion writes them, all generated in the
  database with `generate_series`;
- the reference partner (`manage.py receiver`, HTTPS, kept-alive connections), `--receivers` (2)
  processes sharing one port (`--reuse-port`), so that the partner, which checks every document to
  the letter, is not what the send waits for (one took 60 ms of CPU per 10,000-user document);
- one batch-only destination sending `--users-per-request` (10,000) user
  objects a request.

Then, each batch in a fresh process so that its peak RSS is the batch's own:
1. the first batch: every active membership (the newly-mapped path);
2. every device then leaves its segment (a million changes), and the next
   batch carries those exits (the changes path).
For each it prints the devices and requests, the seconds spent cutting
(reading, packing, storing the documents) and sending, the user objects per
second, and the process's peak RSS (VmHWM) beside its RSS before the batch.
Exit status 1 when a request failed or user objects are missing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import (  # noqa: E402 - scripts folder
    ROOT,
    Children,
    bench_environment,
    free_port,
    load_average,
    reset_database,
    start_receiver,
)

STATE = ROOT / "var" / "bench-batch"
DATABASE_URL = "postgres://postgres@127.0.0.1:5432/aamdest_bench_batch"
BROKER_URL = "redis://127.0.0.1:6379/10"  # configured, never used: the batch runs in-process
SEGMENTS = (14356, 12176, 10329, 10330)
DPID = 20914
STARTUP_TIMEOUT_S = 60


def say(line: str) -> None:
    print(f"bench-batch | {line}", flush=True)


# --- in the child processes (Django set up) -----------------------------------------


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aamdest.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


# Device i: AAM UUID i on 38 digits, in segment SEGMENTS[i % 4], region 6 + i % 4,
# with a partner ID when i is even; a third of its changes onboarded.
GENERATE = [
    """INSERT INTO delivery_device (aam_uuid, last_seen, regions, created_at)
       SELECT lpad(i::text, 38, '0'), now() - interval '1 hour', jsonb_build_array(6 + mod(i, 4)), now()
       FROM generate_series(1, %(devices)s) AS i""",
    """INSERT INTO delivery_membership (device_id, segment_id, is_active, datetime, qualified_at,
                                        expires_at, updated_at)
       SELECT lpad(i::text, 38, '0'), (%(segments)s::bigint[])[1 + mod(i, 4)], TRUE,
              now() - interval '1 hour', now() - interval '1 hour', now() + interval '119 days', now()
       FROM generate_series(1, %(devices)s) AS i""",
    """INSERT INTO delivery_membershipchange (aam_uuid, segment_id, is_active, datetime, is_onboarded,
                                              created_at)
       SELECT lpad(i::text, 38, '0'), (%(segments)s::bigint[])[1 + mod(i, 4)], TRUE,
              now() - interval '1 hour', mod(i, 3) = 0, now()
       FROM generate_series(1, %(devices)s) AS i""",
    """INSERT INTO delivery_partnerid (device_id, dpid, dpuuid, created_at)
       SELECT lpad(i::text, 38, '0'), %(dpid)s, 'gaid-' || i, now()
       FROM generate_series(1, %(devices)s) AS i WHERE mod(i, 2) = 0""",
    "ANALYZE",
]


def seed(*, devices: int, url: str, users_per_request: int) -> dict[str, int]:
    """Create the destination and its mappings, and generate the devices in SQL."""
    from django.db import connection

    from destinations.models import Destination, Mapping, Segment

    destination = Destination.objects.create(
        name="bench-batch", url=url, client_id="74323", user_dpid=DPID, aam_destination_id=423,
        realtime=False, batch_interval_hours=24, max_users_per_request=users_per_request,
    )
    for segment_id in SEGMENTS:
        Segment.objects.create(id=segment_id, name=f"segment {segment_id}")
        Mapping.objects.create(destination=destination, segment_id=segment_id, value=str(segment_id),
                               start_date="2000-01-01")
    with connection.cursor() as cursor:
        for statement in GENERATE:
            cursor.execute(statement, {"devices": devices, "segments": list(SEGMENTS), "dpid": DPID})
    return {"destination_id": destination.pk}


def leave_all() -> dict[str, int]:
    """Every device leaves its segment: a million exits for the next batch."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("""
            INSERT INTO delivery_membershipchange (aam_uuid, segment_id, is_active, datetime, is_onboarded,
                                                   created_at)
            SELECT device_id, segment_id, FALSE, now(), FALSE, now() FROM delivery_membership
            ORDER BY device_id""")
        changes = cursor.rowcount
        cursor.execute("UPDATE delivery_membership SET is_active = FALSE, datetime = now(), "
                       "expires_at = NULL")
        cursor.execute("ANALYZE")
    return {"changes": changes}


def run_batch(*, destination_id: int) -> dict[str, object]:
    """Cut and send one batch; measure this process."""
    from cpu import cpu_seconds
    from django.db import connection
    from django.db.models import Sum
    from django.utils import timezone

    from delivery.batch.transfers import cut_batch, send_batch_deliveries
    from delivery.models import Delivery
    from destinations.models import Destination

    first_id = (Delivery.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1
    rss_before = _status_kib("VmRSS")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pids = (os.getpid(), cursor.fetchone()[0])  # CPU, unlike wall time, hardly moves with the load
    cpu = [tuple(cpu_seconds(pid) for pid in pids)]
    started = time.monotonic()
    cut = cut_batch(destination_id=destination_id, now=timezone.now(), only_if_due=False)
    cut_s = time.monotonic() - started
    cpu.append(tuple(cpu_seconds(pid) for pid in pids))
    sent = send_batch_deliveries(destination=Destination.objects.get(pk=destination_id))
    total_s = time.monotonic() - started
    cpu.append(tuple(cpu_seconds(pid) for pid in pids))
    batch = Delivery.objects.filter(pk__gte=first_id, kind="batch")
    delivered = batch.filter(status="delivered")
    return {
        "devices": cut.devices, "users": cut.users, "requests": sent, "cut_s": round(cut_s, 2),
        "send_s": round(total_s - cut_s, 2), "total_s": round(total_s, 2),
        "delivered_requests": delivered.count(), "failed_requests": batch.filter(status="failed").count(),
        "delivered_users": delivered.aggregate(users=Sum("user_count"))["users"] or 0,
        "rss_before_mib": round(rss_before / 1024, 1), "peak_rss_mib": round(_status_kib("VmHWM") / 1024, 1),
        "cut_cpu_s": [round(after - before, 2) for before, after in zip(cpu[0], cpu[1], strict=True)],
        "send_cpu_s": [round(after - before, 2) for before, after in zip(cpu[1], cpu[2], strict=True)],
    }


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def child_main(argv: list[str]) -> int:
    setup_django()
    command, *rest = argv
    if command == "seed":
        result = seed(devices=int(rest[0]), url=rest[1], users_per_request=int(rest[2]))
    elif command == "leave-all":
        result = leave_all()
    else:
        result = run_batch(destination_id=int(rest[0]))
    print(json.dumps(result), flush=True)
    return 0


# --- the orchestration ----------------------------------------------------------------


def child(step: list[str], *, env: dict[str, str], profile: Path | None = None) -> dict:
    """Run one step in a fresh process; `profile`: under `py-spy record`, its raw samples written there."""
    argv = [sys.executable, __file__, "--child", *step]
    if profile is not None:
        # --idle: wall time, the waits on PostgreSQL included
        argv = [str(Path(sys.executable).with_name("py-spy")), "record", "--idle", "--nonblocking",
                "--format", "raw", "--output", str(profile), "--", *argv]
    done = subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])  # not py-spy's


def report(name: str, result: dict, *, devices: int) -> bool:
    users_per_s = result["users"] / result["total_s"] if result["total_s"] else 0.0
    say(f"{name}: {result['devices']:,} devices, {result['users']:,} user objects in "
        f"{result['requests']} requests; "
        f"cut {result['cut_s']} s + send {result['send_s']} s = {result['total_s']} s "
        f"({users_per_s:,.0f} users/s); peak RSS {result['peak_rss_mib']} MiB "
        f"(RSS before the batch {result['rss_before_mib']} MiB); CPU s (this process, its PostgreSQL "
        f"backend): cut {result['cut_cpu_s']}, send {result['send_cpu_s']}; load {load_average()}")
    is_complete = result["failed_requests"] == 0 and result["delivered_users"] == devices == result["users"]
    if not is_complete:
        say(f"{name}: INCOMPLETE: {result}")
    return is_complete


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--users-per-request", type=int, default=10_000)
    parser.add_argument("--database-url", default=DATABASE_URL)
    parser.add_argument("--receivers", type=int, default=2, help="Reference partner processes on the port.")
    parser.add_argument("--py-spy", type=Path, metavar="DIR",
                        help="Profile each batch with py-spy (folded stacks: DIR/first.txt, DIR/exits.txt).")
    return parser.parse_args()


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # runs `finally`: the receiver it started stops too


def main() -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    arguments = parse_arguments()
    STATE.mkdir(parents=True, exist_ok=True)
    reset_database(arguments.database_url)
    env = bench_environment(database_url=arguments.database_url, broker_url=BROKER_URL)
    env.pop("AAMDEST_CA_BUNDLE", None)
    children = Children(announce=say)
    try:
        port = free_port()
        # --summary-only: a partner that does not print each accepted document, as bench.py's. The first
        # receiver writes the certificates, the others load them.
        for _ in range(arguments.receivers):
            start_receiver(children, env=env, port=port, cert_dir=STATE / "pki", timeout_s=STARTUP_TIMEOUT_S,
                           options=("--summary-only", "--reuse-port"), is_echoed=False)
        children.run("migrate", [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], env=env)
        say(f"generating {arguments.devices:,} devices and memberships")
        started = time.monotonic()
        seeded = child(["seed", str(arguments.devices), f"https://127.0.0.1:{port}/aam",
                        str(arguments.users_per_request)], env=env)
        say(f"generated in {time.monotonic() - started:.1f} s")
        destination_id = str(seeded["destination_id"])
        if profiles := arguments.py_spy:
            profiles.mkdir(parents=True, exist_ok=True)
        first = report("first batch (every active membership)",
                       child(["batch", destination_id], env=env, profile=profiles and profiles / "first.txt"),
                       devices=arguments.devices)
        child(["leave-all"], env=env)
        exits = child(["batch", destination_id], env=env, profile=profiles and profiles / "exits.txt")
        changes = report("next batch (every device leaves)", exits,
                         devices=arguments.devices)
        return 0 if first and changes else 1
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        say(f"failed: {exc}")
        if isinstance(exc, subprocess.CalledProcessError):
            print(exc.stderr[-4000:], file=sys.stderr)
        return 1
    finally:
        children.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(child_main(sys.argv[2:]))
    sys.exit(main())
