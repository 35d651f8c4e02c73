"""Reading a batch (CONTRACT §2, batch mode): the devices to send and their memberships, one at a time.

A batch carries, per device, once:
- for the segments already covered by the destination's previous batch, the
  latest change of each (device, segment) among the changes after the previous
  cut-off and up to this one (`MembershipChange.id` is the order of ingestion),
  entries "1" and exits "0", onboarded data included; except a latest "1" whose
  membership is still active but whose TTL ended by the cut (`now`): the sweep
  ends it at its expiry and logs its "0", which goes in a later batch;
- for the segments newly mapped (never carried, or not in the previous batch),
  every active membership, "1", except those whose TTL ended by the cut (`now`):
  the sweep ends them and their "0" goes in a later batch, never a "1" first.
Devices come in the order of their latest change, then (only newly mapped
segments) in AAM UUID order, each with its regions and its partner IDs in the
destination's namespace.

Memory is bounded: on PostgreSQL one query, grouped per device, is streamed
through a server-side cursor; elsewhere (the SQLite demo) the same rows are
read in chunks of devices.

On PostgreSQL the query also shapes each device's `Segments` as the document
carries them (the mapping's value, "1"/"0", the time formatted by `to_char`
exactly as `format_aam_time` does: `tests/delivery/batch/test_reading.py`
compares both): a million devices then cost Python one JSON parse each, not
a dozen objects.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import orjson
from django.db import connection
from django.db.models import Max, QuerySet

from delivery import dialect
from delivery.models import Device, Membership, MembershipChange, PartnerId
from delivery.sending.documents import (
    ACTIVE,
    INACTIVE,
    SegmentStatus,
    UserEntry,
    UserObject,
    format_regions,
    user_entry,
)

CHUNK_SIZE = 5_000
# `format_aam_time` in PostgreSQL: without the TM prefix, to_char's day and month names are English
# whatever lc_time says.
AAM_TIME_SQL = """to_char({} AT TIME ZONE 'UTC', 'Dy Mon DD HH24:MI:SS "UTC" YYYY')"""
_REGIONS_CACHED = 4_096


@dataclass(frozen=True, slots=True)
class BatchEntry:
    segment_id: int
    is_active: bool
    datetime: dt.datetime


@dataclass(frozen=True, slots=True)
class BatchDevice:
    aam_uuid: str
    entries: list[BatchEntry]  # by segment ID
    regions: list[int]
    partner_uuids: list[str]  # [] when the device has none in the namespace


@dataclass(frozen=True, slots=True)
class BatchUsers:
    """A device's `Users` entries, one per partner ID ("" when none), as the document carries them."""

    aam_uuid: str
    entries: list[UserEntry]


def read_batch_users(
    *, after: int | None, until: int, changed_segments: list[int], full_segments: list[int], dpid: int,
    now: dt.datetime, values: dict[int, str], chunk_size: int = CHUNK_SIZE,
) -> Iterator[BatchUsers]:
    """Yield the batch's devices (see the module docstring); `after` None: no previous batch.

    `changed_segments` and `full_segments` must not overlap; `values` maps each of their
    segments to the value the destination sends for it.
    """
    if after is None:
        changed_segments = []
    if not changed_segments and not full_segments:
        return
    reader = read_postgresql if dialect.is_postgresql() else read_portable_users
    yield from reader(after=after or 0, until=until, changed_segments=changed_segments,
                      full_segments=full_segments, dpid=dpid, now=now, values=values, chunk_size=chunk_size)


def read_postgresql(
    *, after: int, until: int, changed_segments: list[int], full_segments: list[int], dpid: int,
    now: dt.datetime, values: dict[int, str], chunk_size: int,
) -> Iterator[BatchUsers]:
    """One query, grouped per device in the database, streamed through a server-side cursor."""
    sql = _grouped_query(changed=bool(changed_segments), full=bool(full_segments))
    params: dict[str, int | list[int] | str | dt.datetime] = {
        "after": after, "until": until, "changed": changed_segments, "full": full_segments, "dpid": dpid,
        "now": now, "values": orjson.dumps({str(segment): text for segment, text in values.items()}).decode(),
    }
    regions_of: dict[str, list[str]] = {}  # regions JSON → formatted: a few region sets cover most devices
    with connection.cursor() as cursor:
        # Every row is read (no fast start), and compiling the query (JIT) cost more than it saved: 1.2 s
        # of a million devices. LOCAL: until the cut's transaction ends.
        cursor.execute("SET LOCAL cursor_tuple_fraction = 1.0")
        cursor.execute("SET LOCAL jit = off")
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(chunk_size):
            for aam_uuid, segments_json, regions_json, partners_json in rows:
                regions = regions_of.get(regions_json)
                if regions is None:
                    if len(regions_of) >= _REGIONS_CACHED:
                        regions_of.clear()
                    regions = regions_of[regions_json] = format_regions(orjson.loads(regions_json))
                segments = orjson.loads(segments_json)
                partners = orjson.loads(partners_json) if partners_json != "[]" else None  # most have none
                yield BatchUsers(aam_uuid, [
                    {"AAM_UUID": aam_uuid, "DataPartner_UUID": partner, "AAM_Regions": regions,
                     "Segments": segments}
                    for partner in partners or [""]
                ])


def _grouped_query(*, changed: bool, full: bool) -> str:
    """`read_postgresql`'s SQL: one row per device (aam_uuid, `Segments`, regions, partner IDs as JSON).

    `Segments` as `users_of` orders them: the "1"s, then the "0"s, each by segment ID. The value
    sent for a segment is looked up in a JSON object parameter (constant time however many segments
    are mapped), not joined: a join hid the row count from the planner, which then probed the
    devices one by one instead of merging.
    """
    quote = connection.ops.quote_name
    tables = {name: quote(model._meta.db_table) for name, model in
              {"changes": MembershipChange, "memberships": Membership, "devices": Device,
               "partner_ids": PartnerId}.items()}
    parts = [*([_latest_changes_sql(tables)] if changed else []), *([_members_sql(tables)] if full else [])]
    entries = " UNION ALL ".join(f"({part})" for part in parts)
    return f"""
        SELECT e.aam_uuid,
               json_agg(json_build_object(
                   'Segment_ID', %(values)s::jsonb ->> e.segment_id::text,
                   'Status', CASE WHEN e.is_active THEN '1' ELSE '0' END,
                   'DateTime', {AAM_TIME_SQL.format('e.datetime')})
                 ORDER BY NOT e.is_active, e.segment_id) FILTER (WHERE NOT e.expired)::text,
               coalesce(d.regions, '[]'::jsonb)::text,
               coalesce((SELECT json_agg(p.dpuuid ORDER BY p.id) FROM {tables["partner_ids"]} p
                         WHERE p.device_id = e.aam_uuid AND p.dpid = %(dpid)s), '[]'::json)::text
        FROM ({entries}) AS e(aam_uuid, segment_id, is_active, datetime, seq, expired)
        LEFT JOIN {tables["devices"]} d ON d.aam_uuid = e.aam_uuid
        GROUP BY e.aam_uuid, d.regions
        HAVING bool_or(NOT e.expired)
        ORDER BY max(e.seq) NULLS LAST, e.aam_uuid
    """  # noqa: S608 - quoted model tables only; every value is a parameter


def _latest_changes_sql(tables: dict[str, str]) -> str:
    """The latest change of each (device, segment) in the window, and whether it is an expired "1".

    A "1" whose membership's TTL ended by the cut is marked `expired`: it still
    orders the device (as in `read_portable`) but is not carried.
    """
    return f"""
        SELECT c.aam_uuid, c.segment_id, c.is_active, c.datetime, c.seq,
               c.is_active AND EXISTS (
                   SELECT 1 FROM {tables["memberships"]} m
                   WHERE m.device_id = c.aam_uuid AND m.segment_id = c.segment_id AND m.is_active
                     AND m.expires_at <= %(now)s)
        FROM (SELECT DISTINCT ON (c.aam_uuid, c.segment_id) c.aam_uuid, c.segment_id, c.is_active,
                     c.datetime, c.id AS seq
              FROM {tables["changes"]} c
              WHERE c.id > %(after)s AND c.id <= %(until)s AND c.segment_id = ANY(%(changed)s::bigint[])
              ORDER BY c.aam_uuid, c.segment_id, c.id DESC) c"""  # noqa: S608 - quoted model tables only


def _members_sql(tables: dict[str, str]) -> str:
    """The active members of the newly mapped segments whose TTL has not ended by the cut."""
    return f"""
        SELECT m.device_id, m.segment_id, TRUE, m.datetime, NULL::bigint, FALSE
        FROM {tables["memberships"]} m
        WHERE m.is_active AND m.segment_id = ANY(%(full)s::bigint[])
          AND (m.expires_at IS NULL OR m.expires_at > %(now)s)"""  # noqa: S608 - quoted model tables only


def read_portable_users(
    *, after: int, until: int, changed_segments: list[int], full_segments: list[int], dpid: int,
    now: dt.datetime, values: dict[int, str], chunk_size: int,
) -> Iterator[BatchUsers]:
    """`read_postgresql`'s output from `read_portable`'s devices (any database)."""
    devices = read_portable(after=after, until=until, changed_segments=changed_segments,
                            full_segments=full_segments, dpid=dpid, now=now, chunk_size=chunk_size)
    for device in devices:
        yield BatchUsers(device.aam_uuid, [user_entry(user) for user in users_of(device, values=values)])


def users_of(device: BatchDevice, *, values: dict[int, str]) -> list[UserObject]:
    """The device's user objects: its "1"s then its "0"s, once per partner ID ("" when none)."""
    segments = [
        SegmentStatus(values[entry.segment_id], ACTIVE if entry.is_active else INACTIVE, entry.datetime)
        for is_active in (True, False)
        for entry in device.entries
        if entry.is_active is is_active
    ]
    return [
        UserObject(aam_uuid=device.aam_uuid, partner_uuid=partner, regions=device.regions, segments=segments)
        for partner in device.partner_uuids or [""]
    ]


def read_portable(
    *, after: int, until: int, changed_segments: list[int], full_segments: list[int], dpid: int,
    now: dt.datetime, chunk_size: int,
) -> Iterator[BatchDevice]:
    """The same devices through the ORM, a chunk of devices at a time (any database)."""
    changes = MembershipChange.objects.filter(id__gt=after, id__lte=until, segment_id__in=changed_segments)
    if changed_segments:
        by_latest_change = (
            changes.values("aam_uuid").annotate(seq=Max("id")).order_by("seq", "aam_uuid")
            .values_list("aam_uuid", flat=True)
        )
        for uuids in _chunks(by_latest_change.iterator(chunk_size=chunk_size), chunk_size):
            entries: Entries = defaultdict(dict)
            rows = changes.filter(aam_uuid__in=uuids).order_by("id")
            for uuid, segment_id, is_active, moment in rows.values_list("aam_uuid", "segment_id", "is_active",
                                                                        "datetime"):
                entries[uuid][segment_id] = BatchEntry(segment_id, is_active, moment)
            _drop_expired(entries, uuids=uuids, segments=changed_segments, now=now)
            _add_active(entries, uuids=uuids, segments=full_segments, now=now)
            yield from _devices(uuids, entries=entries, dpid=dpid)
    if full_segments:
        members = _unexpired_members(segments=full_segments, now=now)
        if changed_segments:
            members = members.exclude(device_id__in=changes.values("aam_uuid"))
        device_ids = members.order_by("device_id").values_list("device_id", flat=True).distinct()
        for uuids in _chunks(device_ids.iterator(chunk_size=chunk_size), chunk_size):
            entries = defaultdict(dict)
            _add_active(entries, uuids=uuids, segments=full_segments, now=now)
            yield from _devices(uuids, entries=entries, dpid=dpid)


Entries = defaultdict[str, dict[int, BatchEntry]]  # aam_uuid → segment ID → entry


def _unexpired_members(*, segments: list[int], now: dt.datetime) -> QuerySet[Membership]:
    """The active memberships of `segments` whose TTL has not ended by `now`."""
    return Membership.objects.filter(is_active=True, segment_id__in=segments).exclude(expires_at__lte=now)


def _drop_expired(entries: Entries, *, uuids: list[str], segments: list[int], now: dt.datetime) -> None:
    """Leave out each latest "1" whose membership is still active but whose TTL ended by `now`."""
    expired = Membership.objects.filter(device_id__in=uuids, segment_id__in=segments, is_active=True,
                                        expires_at__lte=now)
    for uuid, segment_id in expired.values_list("device_id", "segment_id"):
        entry = entries[uuid].get(segment_id)
        if entry is not None and entry.is_active:
            del entries[uuid][segment_id]


def _add_active(entries: Entries, *, uuids: list[str], segments: list[int], now: dt.datetime) -> None:
    if not segments:
        return
    rows = _unexpired_members(segments=segments, now=now).filter(device_id__in=uuids)
    for uuid, segment_id, moment in rows.values_list("device_id", "segment_id", "datetime"):
        entries[uuid][segment_id] = BatchEntry(segment_id, True, moment)


def _devices(uuids: list[str], *, entries: Entries, dpid: int) -> Iterator[BatchDevice]:
    regions = dict(Device.objects.filter(aam_uuid__in=uuids).values_list("aam_uuid", "regions"))
    partners = PartnerId.objects.dpuuids_by_device(device_ids=uuids, dpid=dpid)
    for uuid in uuids:
        if not entries[uuid]:
            continue  # its only changes were "1"s whose TTL had ended (see `_drop_expired`)
        yield BatchDevice(
            aam_uuid=uuid,
            entries=[entries[uuid][segment_id] for segment_id in sorted(entries[uuid])],
            regions=regions.get(uuid) or [],
            partner_uuids=partners.get(uuid, []),
        )


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
