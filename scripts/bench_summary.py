"""`make bench`: every figure of issue 13's targets in one table, also written as JSON.

Runs, one after the other (each starts and stops what it needs; see their docstrings):
- `scripts/host_speed.py`, first and last: the host's speed at a fixed Python and PostgreSQL work
  (the machine is shared; compare figures across runs only beside it);
- `scripts/bench_ingest.py`: `manage.py ingest` of a 1M-line Adobe file (and 10M with --ingest-10m),
  lines/s and peak RSS;
- `scripts/bench_mix.py --workload synthetic` at 10 and 100 users per request: events/s through
  `POST /api/v1/events/` under gunicorn, users/s delivered end to end;
- `scripts/bench_mix.py --workload mix`: the realistic mix, events/s and CPU ms per event by process;
- `scripts/bench_batch.py`: a million-membership first batch and a million exits, seconds and peak RSS;
- the latency at a steady 5,000 events/s: `latency_at_rate` reads the JSON that `scripts/bench.py
  --rate` writes (`--rate-json`, default var/bench/rate.json), running it first when bench.py has a
  `--rate` option; otherwise the row says how to get it.

A step that fails leaves "n/a" in its rows; the exit status is then 1. Every row carries the load
average measured at its end: the machine may be shared, and the figures move with it.

    .venv/bin/python scripts/bench_summary.py [--quick] [--ingest-10m] [--skip STEP ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import host_speed  # noqa: E402 - scripts folder
import stack  # noqa: E402 - scripts folder

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
STATE = ROOT / "var" / "bench-summary"
STEPS = ("host", "ingest", "synthetic", "mix", "batch", "latency")
_BATCH_LINE = re.compile(r"(?P<name>first batch|next batch)[^:]*: (?P<devices>[\d,]+) devices"
                         r".*?cut (?P<cut>[\d.]+) s "
                         r"\+ send (?P<send>[\d.]+) s = (?P<total>[\d.]+) s.*?peak RSS (?P<rss>[\d.]+) MiB")
Row = tuple[str, str, str, str]  # (what, measured, target, load)


def say(line: str) -> None:
    print(f"bench-summary | {line}", flush=True)


def load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a bench script, echoing its output, and return it (its stdout) whatever its status."""
    say("running " + " ".join(argv))
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, text=True, stdout=subprocess.PIPE,  # noqa: S603
                          check=False)
    sys.stdout.write(done.stdout)
    return done


def ingest(arguments: argparse.Namespace) -> dict[str, Any]:
    lines = [100_000] if arguments.quick else [1_000_000] + ([10_000_000] if arguments.ingest_10m else [])
    done = run([str(SCRIPTS / "bench_ingest.py"), "--json", f"--database-url={arguments.database}_ingest",
                *[f"--lines={n}" for n in lines]])
    runs = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"bench": "ingest"')]
    return {str(result["lines"]): result for result in runs}


def workload(name: str, *, users_per_request: int, arguments: argparse.Namespace) -> dict[str, Any]:
    path = STATE / f"{name}-{users_per_request}.json"
    path.unlink(missing_ok=True)
    events = ["--events=5000", "--devices=2000", "--warmup=1000"] if arguments.quick else []
    run([str(SCRIPTS / "bench_mix.py"), f"--workload={name}", f"--users-per-request={users_per_request}",
         f"--json={path}", f"--database-url={arguments.database}_mix", f"--broker-url={arguments.broker_url}",
         *events])
    return json.loads(path.read_text()) if path.exists() else {}


def batch(arguments: argparse.Namespace) -> dict[str, Any]:
    done = run([str(SCRIPTS / "bench_batch.py"), f"--database-url={arguments.database}_batch",
                *(["--devices=100000"] if arguments.quick else [])])
    found = {match["name"]: {"devices": int(match["devices"].replace(",", "")), "cut_s": float(match["cut"]),
                             "send_s": float(match["send"]), "total_s": float(match["total"]),
                             "peak_rss_mib": float(match["rss"])}
             for match in _BATCH_LINE.finditer(done.stdout)}
    return {**found, "load_average": load()} if found else {}


def latency_at_rate(arguments: argparse.Namespace) -> dict[str, Any]:
    """p50/p90/p99 at a steady 5,000 events/s (10 users a request), no batch beside: `bench.py --rate`."""
    path: Path = arguments.rate_json
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    run([str(SCRIPTS / "bench.py"), "--rate=5000", "--batch-devices=0", "--duration=30", f"--json={path}"])
    if not path.exists():
        return {}
    result = json.loads(path.read_text())
    figures = {key: result[key] for key in ("p50", "p90", "p99")}
    return figures | {"rate": result["rate"], "load_average": result["load"]}


def host_rows(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for when in ("before", "after"):
        if speed := results.get(f"host-{when}"):
            rows.append((f"host speed, {when} (ms, lower is faster)", f"Python {speed['python_ms']:,}, "
                         f"PostgreSQL {speed['postgresql_ms']:,}", "yardstick", str(speed["load_average"])))
    return rows


def table(results: dict[str, Any]) -> list[Row]:
    def figure(value: object, unit: str) -> str:
        if value is None:
            return "n/a"
        return f"{value:,} {unit}" if isinstance(value, int) else f"{value} {unit}"

    rows: list[Row] = host_rows(results)
    for lines, run_ in results.get("ingest", {}).items():
        rows.append((f"manage.py ingest, {int(lines):,} lines", f"{run_['lines_per_s']:,} lines/s, peak RSS "
                     f"{run_['peak_rss_mib']} MiB", "≥ 50,000 lines/s at 1M, < 300 MB",
                     str(run_["load_average"])))
    for users in (10, 100):
        result = results.get(f"synthetic-{users}", {})
        rows.append((f"ingestion, gunicorn ({users} users/request)", figure(result.get("ingest_events_per_s"),
                     "events/s"), "≥ 15,000 events/s", str(result.get("load_average", "n/a"))))
        rows.append((f"end to end, {users} users/request",
                     figure(result.get("delivered_users_per_s"), "users/s")
                     + f" (lost {result.get('lost', 'n/a')}, duplicates {result.get('duplicates', 'n/a')})",
                     "≥ 7,000" if users == 10 else "≥ 12,000", str(result.get("load_average", "n/a"))))
    latency = results.get("latency", {})
    rows.append(("latency p99 at 5,000 events/s", figure(latency.get("p99"), "s") + (
        f" (p50 {latency.get('p50')} s, p90 {latency.get('p90')} s)" if latency else
        " (needs scripts/bench.py --rate; see --rate-json)"), "≤ 1 s",
        str(latency.get("load_average", "n/a"))))
    batch_ = results.get("batch", {})
    for name, label in (("first batch", "first batch"), ("next batch", "exits")):
        step = batch_.get(name)
        devices = f"{step['devices']:,}" if step else "1,000,000"
        rows.append((f"batch, {devices} {label}", "n/a" if step is None else f"{step['total_s']} s (cut "
                     f"{step['cut_s']} + send {step['send_s']}), peak RSS {step['peak_rss_mib']} MiB",
                     "≤ 30 s, < 300 MB",
                     str(batch_.get("load_average", "n/a"))))
    mix = results.get("mix-10", {})
    cpu = ", ".join(f"{kind} {ms}" for kind, ms in mix.get("cpu_ms_per_event", {}).items())
    rows.append(("realistic mix", figure(mix.get("ingest_events_per_s"), "events/s")
                 + (f"; CPU ms/event: {cpu}" if cpu else ""), "report", str(mix.get("load_average", "n/a"))))
    return rows


def print_table(rows: list[Row]) -> None:
    headers = ("target", "measured", "goal", "load average")
    widths = [max(len(row[column]) for row in [headers, *rows]) for column in range(4)]
    print("\n".join(["", "aamdest bench summary (issue 13)",
                     *("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                       for row in [headers, tuple("-" * width for width in widths), *rows])]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="Small sizes: checks the bench, not the targets.")
    parser.add_argument("--ingest-10m", action="store_true", help="Also a 10M-line ingest (a few minutes).")
    parser.add_argument("--skip", action="append", default=[], choices=STEPS)
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/aamdest_bench",
                        help="The benches' databases are this URL + _ingest, _mix, _batch (dropped!).")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/10", help="Flushed!")
    parser.add_argument("--rate-json", type=Path, default=ROOT / "var" / "bench" / "rate.json")
    parser.add_argument("--json", type=Path, default=ROOT / "bench-results.json")
    arguments = parser.parse_args()
    STATE.mkdir(parents=True, exist_ok=True)

    def host(when: str) -> dict[str, Any]:
        speed = host_speed.measure(stack.maintenance_url(arguments.database))
        return {f"host-{when}": speed | {"load_average": load()}}

    steps = {
        "host": lambda: host("before"),
        "ingest": lambda: {"ingest": ingest(arguments)},
        "synthetic": lambda: {f"synthetic-{users}": workload("synthetic", users_per_request=users,
                                                             arguments=arguments) for users in (10, 100)},
        "mix": lambda: {"mix-10": workload("mix", users_per_request=10, arguments=arguments)},
        "batch": lambda: {"batch": batch(arguments)},
        "latency": lambda: {"latency": latency_at_rate(arguments)},
        "host again": lambda: {} if "host" in arguments.skip else host("after"),
    }
    results: dict[str, Any] = {}
    for name, step in steps.items():
        if name not in arguments.skip:
            results.update(step())
    rows = table(results)
    print_table(rows)
    arguments.json.write_text(json.dumps({"results": results, "table": rows}, indent=2))
    say(f"written to {arguments.json}")
    return 1 if any("n/a" in row[1] for row in rows if "latency" not in row[0]) else 0


if __name__ == "__main__":
    sys.exit(main())
