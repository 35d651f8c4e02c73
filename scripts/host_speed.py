"""`make bench`'s yardstick: how fast this host runs a fixed amount of Python and of PostgreSQL work.

The machine is shared: from one day to the next the same code, the reference receiver's included,
spent up to twice the CPU per event. A figure of `make bench` compares with another only beside
this one. Each workload runs three times and the fastest counts (milliseconds; lower is faster):

- Python: 200,000 small dicts serialised and parsed with the standard `json` module, and summed;
- PostgreSQL: 200,000 rows inserted into a temporary table with a text index, then sorted and
  counted, in a transaction rolled back (the write path's kind of work, on one backend).

    .venv/bin/python scripts/host_speed.py [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import time

import psycopg

DATABASE_URL = "postgres://postgres@127.0.0.1:5432/postgres"
ROUNDS = 3
_POSTGRESQL_WORK = """
    CREATE TEMPORARY TABLE host_speed (id bigserial PRIMARY KEY, key text, at timestamptz) ON COMMIT DROP;
    CREATE INDEX ON host_speed (key);
    INSERT INTO host_speed (key, at) SELECT md5(n::text), now() FROM generate_series(1, 200000) AS n;
    SELECT count(*) FROM (SELECT key FROM host_speed ORDER BY key OFFSET 0) AS sorted;
"""


def python_ms() -> float:
    started = time.perf_counter()
    total = 0
    for number in range(200_000):
        row = json.loads(json.dumps({"aam_uuid": f"{number:038d}", "segment": number % 50, "active": True}))
        total += row["segment"]
    assert total > 0
    return (time.perf_counter() - started) * 1000


def postgresql_ms(database_url: str) -> float:
    with psycopg.connect(database_url, connect_timeout=3) as connection:
        started = time.perf_counter()
        connection.execute(_POSTGRESQL_WORK)
        elapsed = (time.perf_counter() - started) * 1000
        connection.rollback()
    return elapsed


def measure(database_url: str = DATABASE_URL) -> dict[str, float]:
    """The fastest of `ROUNDS` runs of each workload, in milliseconds."""
    return {
        "python_ms": round(min(python_ms() for _ in range(ROUNDS))),
        "postgresql_ms": round(min(postgresql_ms(database_url) for _ in range(ROUNDS))),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DATABASE_URL)
    print(json.dumps(measure(parser.parse_args().database_url)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
