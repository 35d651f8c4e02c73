"""`make bench`, file part: `manage.py ingest` of a generated Adobe-format file, its speed and peak memory.

Generates LINES lines (`AAM_UUID SEG,SEG`, two segments a line, every device new, no destination
configured) under /tmp, resets the PostgreSQL database `aamdest_bench_ingest` (or --database-url),
migrates, then times `manage.py ingest FILE` in a child process and reads its peak RSS from the kernel
(`wait4`'s `ru_maxrss`). The file is deleted afterwards. Prints a line per run and, with --json, one
JSON object per run for `scripts/bench_summary.py`.

    .venv/bin/python scripts/bench_ingest.py --lines 1000000 [--lines 10000000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import ROOT, bench_environment, reset_database  # noqa: E402 - scripts folder

DATABASE_URL = "postgres://postgres@127.0.0.1:5432/aamdest_bench_ingest"
BROKER_URL = "redis://127.0.0.1:6379/15"
SEGMENTS = (101, 102, 103, 104, 105, 106, 107, 108)


def say(line: str) -> None:
    print(f"bench-ingest | {line}", flush=True)


def write_file(path: Path, *, lines: int) -> None:
    """`lines` lines of a new device each, in two of `SEGMENTS`."""
    prefix = uuid.uuid4().hex[:8]
    with path.open("w", buffering=1 << 20) as out:
        for number in range(lines):
            first = SEGMENTS[number % len(SEGMENTS)]
            second = SEGMENTS[(number // len(SEGMENTS) + 1 + number) % len(SEGMENTS)]
            second = second if second != first else SEGMENTS[(number + 1) % len(SEGMENTS)]
            out.write(f"{prefix}{number:012d} {first},{second}\n")


def run_ingest(path: Path, *, env: dict[str, str]) -> dict[str, float]:
    """Time `manage.py ingest path` and read its peak RSS (KiB on Linux)."""
    started = time.perf_counter()
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and manage.py
        [sys.executable, "manage.py", "ingest", str(path), "--datetime", "2026-01-01T00:00:00Z"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"manage.py ingest failed:\n{output}")
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def bench(lines: int, *, database_url: str, env: dict[str, str]) -> dict[str, object]:
    reset_database(database_url)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"],  # noqa: S603
                   cwd=ROOT, env=env, check=True)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-", dir="/tmp") as folder:
        path = Path(folder) / f"adobe-{lines}.txt"
        write_file(path, lines=lines)
        size_mib = path.stat().st_size / 2**20
        measured = run_ingest(path, env=env)
    lines_per_s = lines / float(measured["seconds"])
    return {"lines": lines, "file_mib": round(size_mib, 1), **measured, "lines_per_s": round(lines_per_s),
            "load_average": [round(value, 2) for value in os.getloadavg()]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, action="append",
                        help="lines of a file (repeat for several runs)")
    parser.add_argument("--database-url", default=DATABASE_URL)
    parser.add_argument("--json", action="store_true", help="one JSON object a run on stdout")
    arguments = parser.parse_args()
    env = bench_environment(database_url=arguments.database_url, broker_url=BROKER_URL)
    for lines in arguments.lines or [1_000_000]:
        result = bench(lines, database_url=arguments.database_url, env=env)
        say(f"{lines:,} lines ({result['file_mib']} MiB): {result['seconds']} s, "
            f"{result['lines_per_s']:,} lines/s, peak RSS {result['peak_rss_mib']} MiB, "
            f"load {result['load_average']}")
        if arguments.json:
            print(json.dumps({"bench": "ingest", **result}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
