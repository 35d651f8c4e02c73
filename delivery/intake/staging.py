"""Adobe-format files on PostgreSQL (`manage.py ingest`): COPY into a staging table, then set-based merges.

Every event of an Adobe file has the file's datetime and onboarded flag
(`delivery.intake.importing.Defaults`), so the merging rules of
`delivery.intake.merging` reduce, per (device, segment), to whether the
file qualifies it, disqualifies it, or both (the disqualification then wins
the tie: it applies second). `_PLAN` applies them to the stored membership in
one statement, case for case as `merging._apply_one` and
`merging._late_qualification` do; `tests/delivery/intake/test_staging.py`
checks both give the same memberships and changes.

Per chunk of lines: the lines go to the temporary table `import_line` with
COPY (`StagedChunk.add`, no Python object per event); then `merge`
aggregates them per (device, segment), creates the new segments, upserts
and locks the devices in `aam_uuid` order (as `delivery.intake.storage`
does), plans the memberships, writes them and their `MembershipChange`
rows, all set-based. Pending marks go through
`delivery.intake.pending_marks.mark_pending` only when a real-time
destination maps one of the segments, or a device has a "0" waiting (a
`DestinationDevice` with `left_segment_ids`): an onboarding file with no
real-time mapping writes nothing more.

The caller holds one transaction around every chunk: the temporary tables
go with it (ON COMMIT DROP).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from django.db import connection
from django.utils import timezone

from delivery.intake import storage
from delivery.intake.merging import Change, ChangeKind, compute_expires_at
from delivery.intake.pending_marks import has_realtime_destinations, mark_pending

MARK_CHANGES_AT_ONCE = 20_000
_COPY_FLUSH_BYTES = 1 << 20

_CREATE = """
    SET LOCAL work_mem = '64MB';  -- the aggregation and the sorts of a chunk, in memory
    CREATE TEMPORARY TABLE IF NOT EXISTS import_line (aam_uuid text, added text, removed text) ON COMMIT DROP;
    CREATE TEMPORARY TABLE IF NOT EXISTS import_key (
        aam_uuid varchar(100), segment_id bigint, qualifies boolean, disqualifies boolean) ON COMMIT DROP;
    CREATE TEMPORARY TABLE IF NOT EXISTS import_plan (
        aam_uuid varchar(100), segment_id bigint, known boolean, kind1 text, at1 timestamptz, kind2 text,
        is_active boolean, datetime timestamptz, qualified_at timestamptz, expires_at timestamptz)
        ON COMMIT DROP;
    TRUNCATE import_line, import_key, import_plan;
"""

_KEYS = """
    INSERT INTO import_key
    SELECT aam_uuid, segment_id, bool_or(qualifies), bool_or(NOT qualifies) FROM (
        SELECT l.aam_uuid, s.id::bigint AS segment_id, true AS qualifies
        FROM import_line l, unnest(string_to_array(NULLIF(l.added, ''), ',')) AS s(id)
        UNION ALL
        SELECT l.aam_uuid, s.id::bigint, false
        FROM import_line l, unnest(string_to_array(NULLIF(l.removed, ''), ',')) AS s(id)
    ) AS event
    GROUP BY aam_uuid, segment_id;
    ANALYZE import_key;
"""

_DEVICES = """
    INSERT INTO delivery_device AS device (aam_uuid, last_seen, regions, created_at)
    SELECT DISTINCT aam_uuid, %(at)s::timestamptz, '[]'::jsonb, %(now)s::timestamptz FROM import_key
    ORDER BY aam_uuid
    ON CONFLICT (aam_uuid) DO UPDATE SET last_seen = EXCLUDED.last_seen
        WHERE device.last_seen < EXCLUDED.last_seen
"""

# kind1: what the qualification did (merging._apply_one / _late_qualification); step2: the
# disqualification, applied after it: 'left' (was active), 'stored' (kept as an inactive
# membership, no change), 'none'.
_PLAN = """
    INSERT INTO import_plan
    WITH stored AS (
        SELECT k.aam_uuid, k.segment_id, k.qualifies, k.disqualifies, x.expires_at AS new_expires_at,
               m.device_id IS NOT NULL AS known, m.is_active AS s_active, m.datetime AS s_at,
               m.qualified_at AS s_qualified_at, m.expires_at AS s_expires_at
        FROM import_key k
        JOIN json_to_recordset(%(expiry)s::json) AS x(segment_id bigint, expires_at timestamptz)
            USING (segment_id)
        LEFT JOIN delivery_membership m ON m.device_id = k.aam_uuid AND m.segment_id = k.segment_id
    ), first AS (
        SELECT s.*, CASE
            WHEN NOT s.qualifies THEN NULL
            WHEN NOT s.known OR %(at)s > s.s_at THEN CASE WHEN s.s_active THEN 'refreshed' ELSE 'entered' END
            WHEN s.s_active OR s.s_qualified_at IS NOT NULL THEN NULL
            ELSE 'left' END AS kind1
        FROM stored s
    ), after_first AS (
        SELECT f.*, f.known OR f.kind1 IS NOT NULL AS known1,
               CASE WHEN f.kind1 IS NULL THEN f.s_active ELSE f.kind1 <> 'left' END AS active1,
               CASE WHEN f.kind1 IN ('entered', 'refreshed') THEN %(at)s ELSE f.s_at END AS at1,
               CASE WHEN f.kind1 IS NULL THEN f.s_qualified_at ELSE %(at)s END AS qualified_at1,
               CASE WHEN f.kind1 IS NULL THEN f.s_expires_at WHEN f.kind1 = 'left' THEN NULL
                    ELSE f.new_expires_at END AS expires_at1
        FROM first f
    ), second AS (
        SELECT a.*, CASE
            WHEN NOT a.disqualifies OR (a.known1 AND %(at)s < a.at1) THEN 'none'
            WHEN NOT a.known1 OR NOT a.active1 THEN
                CASE WHEN a.known1 AND %(at)s = a.at1 THEN 'none' ELSE 'stored' END
            ELSE 'left' END AS step2
        FROM after_first a
    )
    SELECT aam_uuid, segment_id, known, kind1, at1, CASE WHEN step2 = 'left' THEN 'left' END,
           CASE WHEN step2 = 'none' THEN active1 ELSE false END,
           CASE WHEN step2 = 'none' THEN at1 ELSE %(at)s END,
           qualified_at1,
           CASE WHEN step2 = 'none' THEN expires_at1 END
    FROM second
    WHERE kind1 IS NOT NULL OR step2 <> 'none'
"""

# The planned memberships, in key order, those `known` (stored already) or not.
_PLANNED_MEMBERSHIPS = """
    INSERT INTO delivery_membership (
        device_id, segment_id, is_active, datetime, qualified_at, expires_at, updated_at)
    SELECT aam_uuid, segment_id, is_active, datetime, qualified_at, expires_at, %(now)s FROM import_plan
    WHERE {known}
    ORDER BY aam_uuid, segment_id
"""

# The devices are locked (`_DEVICES`), so no other writer adds their memberships meanwhile: the new
# ones go in by plain INSERT, cheaper than INSERT … ON CONFLICT (400,000 rows: 7.6 / 6.6 s → 5.0 / 5.1 s).
_NEW_MEMBERSHIPS = _PLANNED_MEMBERSHIPS.format(known="NOT known")

# The known ones by INSERT … ON CONFLICT in key order: an UPDATE … FROM import_plan took 21.8 s
# where this takes 15.6 (400,000 memberships of a file imported twice).
_KNOWN_MEMBERSHIPS = _PLANNED_MEMBERSHIPS.format(known="known") + """
    ON CONFLICT (device_id, segment_id) DO UPDATE SET is_active = EXCLUDED.is_active,
        datetime = EXCLUDED.datetime, qualified_at = EXCLUDED.qualified_at, expires_at = EXCLUDED.expires_at,
        updated_at = EXCLUDED.updated_at
"""

_CHANGES = """
    SELECT aam_uuid, segment_id, kind, datetime FROM (
        SELECT aam_uuid, segment_id, kind1 AS kind, at1 AS datetime, 1 AS step FROM import_plan
        WHERE kind1 IS NOT NULL
        UNION ALL
        SELECT aam_uuid, segment_id, kind2, %(at)s, 2 FROM import_plan WHERE kind2 IS NOT NULL
    ) AS change
"""

_WRITE_CHANGES = f"""
    INSERT INTO delivery_membershipchange (
        aam_uuid, segment_id, is_active, datetime, is_onboarded, created_at)
    SELECT aam_uuid, segment_id, kind <> 'left', datetime, %(onboarded)s, %(now)s FROM ({_CHANGES}) AS c
    ORDER BY datetime, kind = 'left', aam_uuid, segment_id
"""  # noqa: S608 - constant text

_LEFT_WAITING = """
    SELECT EXISTS (
        SELECT 1 FROM delivery_destinationdevice waiting
        JOIN (SELECT DISTINCT aam_uuid FROM import_plan) AS changed ON changed.aam_uuid = waiting.device_id
        WHERE waiting.left_segment_ids <> '[]'::jsonb
    )
"""


@dataclass
class Merged:
    events: int = 0
    changes: int = 0
    destination_ids: frozenset[int] = frozenset()


class StagedChunk:
    """One chunk of an Adobe file on its way to `import_line`, through one COPY."""

    def __init__(self) -> None:
        self.events = 0
        self._buffer = bytearray()
        self._cursor = connection.cursor()
        self._cursor.execute(_CREATE)
        self._copy_context = self._cursor.copy("COPY import_line (aam_uuid, added, removed) FROM STDIN")
        self._copy = self._copy_context.__enter__()

    def add(self, aam_uuid: bytes, added: bytes, removed: bytes, *, events: int) -> None:
        """Stage one valid line: its AAM UUID (escaped for COPY's text format) and its comma-separated IDs."""
        self._buffer += b"%s\t%s\t%s\n" % (aam_uuid, added, removed)
        self.events += events
        if len(self._buffer) >= _COPY_FLUSH_BYTES:
            self._copy.write(self._buffer)
            self._buffer.clear()

    def merge(self, *, at: dt.datetime, onboarded: bool) -> Merged:
        """End the COPY and merge the staged lines, dated `at`; see the module docstring."""
        self._copy.write(self._buffer)
        self._copy_context.__exit__(None, None, None)
        with self._cursor as cursor:
            if not self.events:
                return Merged()
            now = timezone.now()
            cursor.execute(_KEYS)
            cursor.execute("SELECT DISTINCT segment_id FROM import_key")
            ttl_days = storage.ensure_segments({segment_id for (segment_id,) in cursor.fetchall()})
            expiry = [{"segment_id": segment, "expires_at": compute_expires_at(qualified_at=at, ttl_days=ttl)}
                      for segment, ttl in ttl_days.items()]
            parameters: dict[str, Any] = {"at": at, "now": now, "onboarded": onboarded,
                                          "expiry": orjson.dumps(expiry).decode()}
            cursor.execute(_DEVICES, parameters)
            cursor.execute(_PLAN, parameters)
            cursor.execute(_NEW_MEMBERSHIPS, parameters)
            cursor.execute(_KNOWN_MEMBERSHIPS, parameters)
            cursor.execute(_WRITE_CHANGES, parameters)
            changes = cursor.rowcount
            marked = _mark_pending(cursor, parameters, segment_ids=set(ttl_days), now=now)
        return Merged(events=self.events, changes=changes, destination_ids=frozenset(marked))


def _mark_pending(
    cursor: Any, parameters: dict[str, Any], *, segment_ids: set[int], now: dt.datetime
) -> set[int]:
    """Pending marks for the chunk's changes, when a destination can be concerned (module docstring)."""
    realtime = not parameters["onboarded"] and has_realtime_destinations(segment_ids, now=now)
    if not realtime:
        cursor.execute(_LEFT_WAITING)
        if not cursor.fetchone()[0]:
            return set()
    marked: set[int] = set()
    for changes in _changes(parameters):
        marked |= mark_pending(changes=changes, now=now)
    return marked


def _changes(parameters: dict[str, Any]) -> Iterator[list[Change]]:
    """The chunk's changes by device, then in the order they took effect, a few thousand at a time.

    A server-side cursor: the changes are never all in memory.
    """
    onboarded = parameters["onboarded"]
    with connection.chunked_cursor() as cursor:
        cursor.execute(f"{_CHANGES} ORDER BY aam_uuid, datetime, kind = 'left', step", parameters)
        while rows := cursor.fetchmany(MARK_CHANGES_AT_ONCE):
            yield [Change(aam_uuid, segment_id, ChangeKind(kind), datetime, onboarded)
                   for aam_uuid, segment_id, kind, datetime in rows]
