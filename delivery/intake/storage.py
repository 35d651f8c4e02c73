"""Reading and writing what `delivery.intake.membership.apply_events` stores, under its locks.

Concurrency: every writer of a device's memberships first holds the device's
row lock. Devices are upserted and locked in one statement in `aam_uuid`
order (on SQLite: inserted, then locked in that order), so that concurrent
ingests of the same devices queue instead of deadlocking; their memberships,
then their `DestinationDevice` rows (`delivery.intake.pending_marks`), are
locked next.

These locks also keep the references that the database no longer checks row by
row (migration 0009): a membership or a `DestinationDevice` row is created only
under its device's lock, and erasure locks the devices it deletes; the segments
written are held `FOR KEY SHARE` (`ensure_segments`), and deleting a segment
locks it `FOR UPDATE` first (`destinations.services.delete_segments`).

Speed: the bulk writes go through `delivery.bulk.bulk_write` (on PostgreSQL
the rows travel as one JSON parameter); 10,000 events take a few hundred
milliseconds.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import TypedDict

import orjson
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from delivery import bulk, dialect
from delivery.intake.events import Event, EventType
from delivery.intake.merging import Change, ChangeKind, Key, MembershipState
from delivery.models import Device, DeviceErasure, ErasureReason, Membership, MembershipChange, PartnerId
from destinations.models import Segment

DEVICE_TABLE = Device._meta.db_table
MEMBERSHIP_TABLE = Membership._meta.db_table
SEGMENT_TABLE = Segment._meta.db_table


class _DeviceRow(TypedDict):
    """One device to upsert, as the events see it; `creates`: the device may be created."""

    aam_uuid: str
    last_seen: dt.datetime
    regions: list[int]
    creates: bool


def ensure_segments(segment_ids: set[int]) -> dict[int, int]:
    """Create the segments not configured yet (default TTL); return every segment's `ttl_days`.

    Each segment stays locked `FOR KEY SHARE` until the commit, so that deleting it
    (`destinations.services.delete_segments`) waits for the memberships written here.
    """
    ttl_days = _share_segments(segment_ids)
    missing = sorted(segment_ids - ttl_days.keys())
    if missing:
        Segment.objects.bulk_create([Segment(id=segment_id) for segment_id in missing], ignore_conflicts=True)
        ttl_days.update(_share_segments(set(missing)))
    return ttl_days


def _share_segments(segment_ids: set[int]) -> dict[int, int]:
    if not dialect.is_postgresql():  # SQLite: the transaction holds the whole database
        return dict(Segment.objects.filter(id__in=segment_ids).values_list("id", "ttl_days"))
    sql = f"SELECT id, ttl_days FROM {SEGMENT_TABLE} WHERE id = ANY(%s) ORDER BY id FOR KEY SHARE"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, [sorted(segment_ids)])
        return dict(cursor.fetchall())


def upsert_and_lock_devices(events: list[Event]) -> set[str]:
    """Create, update and lock the events' devices; return the aam_uuids that exist now.

    `last_seen` becomes the latest of the stored and the events' datetimes,
    `regions` the union. An opt-out alone does not create a device: there is
    nothing to opt out of.
    """
    last_seen: dict[str, dt.datetime] = {}
    regions: dict[str, set[int]] = defaultdict(set)
    creators: set[str] = set()
    for event in events:
        last_seen[event.aam_uuid] = max(event.datetime, last_seen.get(event.aam_uuid, event.datetime))
        regions[event.aam_uuid].update(event.regions)
        if event.type is not EventType.OPT_OUT:
            creators.add(event.aam_uuid)
    rows = [
        _DeviceRow(aam_uuid=uuid, last_seen=last_seen[uuid], regions=sorted(regions[uuid]),
                   creates=uuid in creators)
        for uuid in sorted(last_seen)
    ]
    if dialect.is_postgresql():
        return _upsert_devices_postgresql(rows)
    return _upsert_devices_portable(rows)


def _upsert_devices_postgresql(rows: list[_DeviceRow]) -> set[str]:
    # One statement merges and locks every device, in the database's order of
    # aam_uuid, so that two ingests of the same devices queue instead of deadlocking.
    sql = f"""
        INSERT INTO {DEVICE_TABLE} AS device (aam_uuid, last_seen, regions, created_at)
        SELECT r.aam_uuid, r.last_seen, r.regions, %s
        FROM json_to_recordset(%s::json) AS r(aam_uuid varchar(100), last_seen timestamptz, regions jsonb,
                                                creates boolean)
        WHERE r.creates OR EXISTS (SELECT 1 FROM {DEVICE_TABLE} known WHERE known.aam_uuid = r.aam_uuid)
        ORDER BY r.aam_uuid
        ON CONFLICT (aam_uuid) DO UPDATE SET
            last_seen = GREATEST(device.last_seen, EXCLUDED.last_seen),
            regions = CASE WHEN EXCLUDED.regions <@ device.regions THEN device.regions ELSE (
                SELECT jsonb_agg(DISTINCT region ORDER BY region)
                FROM jsonb_array_elements(device.regions || EXCLUDED.regions) AS region
            ) END
        RETURNING device.aam_uuid
    """  # noqa: S608 - table names come from the models, values are parameters
    with connection.cursor() as cursor:
        cursor.execute(sql, [timezone.now(), orjson.dumps(rows).decode()])
        return {uuid for (uuid,) in cursor.fetchall()}


def _upsert_devices_portable(rows: list[_DeviceRow]) -> set[str]:
    # Insert the new devices, then lock every device in aam_uuid order and merge in Python.
    uuids = [row["aam_uuid"] for row in rows]
    Device.objects.bulk_create(
        [Device(aam_uuid=row["aam_uuid"], last_seen=row["last_seen"], regions=row["regions"])
         for row in rows if row["creates"]],
        ignore_conflicts=True,
    )
    wanted = {row["aam_uuid"]: row for row in rows}
    locked = (
        Device.objects.select_for_update().filter(aam_uuid__in=uuids).order_by("aam_uuid")
        .values_list("aam_uuid", "last_seen", "regions")
    )
    updates = []
    for uuid, stored_last_seen, stored_regions in locked:
        merged_last_seen = max(stored_last_seen, wanted[uuid]["last_seen"])
        merged_regions = sorted(set(wanted[uuid]["regions"]).union(stored_regions))
        if merged_last_seen != stored_last_seen or merged_regions != stored_regions:
            updates.append(Device(aam_uuid=uuid, last_seen=merged_last_seen, regions=merged_regions))
    Device.objects.bulk_create(
        updates, update_conflicts=True, unique_fields=["aam_uuid"], update_fields=["last_seen", "regions"]
    )
    return set(Device.objects.filter(aam_uuid__in=uuids).values_list("aam_uuid", flat=True))


def lock_memberships(events: list[Event]) -> dict[Key, MembershipState]:
    """Lock and read the memberships the events may change (all of an opting-out device's)."""
    devices = {event.aam_uuid for event in events if event.segment_id is not None}
    segments = {event.segment_id for event in events if event.segment_id is not None}
    opting_out = {event.aam_uuid for event in events if event.type is EventType.OPT_OUT}
    if not devices and not opting_out:
        return {}
    if dialect.is_postgresql():
        return _lock_memberships_postgresql(devices, segments, opting_out)
    rows = (
        Membership.objects.select_for_update()
        .filter(Q(device_id__in=devices, segment_id__in=segments) | Q(device_id__in=opting_out))
        .order_by("device_id", "segment_id")
        .values_list("device_id", "segment_id", "is_active", "datetime", "qualified_at", "expires_at")
    )
    return {(row[0], row[1]): MembershipState(*row[2:]) for row in rows}


def _lock_memberships_postgresql(
    devices: set[str], segments: set[int], opting_out: set[str]
) -> dict[Key, MembershipState]:
    # The same rows as the portable query, with each set as one array parameter: Django would
    # prepare and quote every value of an IN list one by one (a fifth of a request's CPU).
    sql = f"""
        SELECT device_id, segment_id, is_active, datetime, qualified_at, expires_at FROM {MEMBERSHIP_TABLE}
        WHERE (device_id = ANY(%s) AND segment_id = ANY(%s)) OR device_id = ANY(%s)
        ORDER BY device_id, segment_id FOR UPDATE
    """  # noqa: S608 - the table name comes from the model, values are parameters
    with connection.cursor() as cursor:
        cursor.execute(sql, [sorted(devices), sorted(segments),
                             sorted(opting_out)])
        return {(row[0], row[1]): MembershipState(*row[2:]) for row in cursor.fetchall()}


def write_memberships(states: dict[Key, MembershipState]) -> None:
    rows = [
        {"device_id": aam_uuid, "segment_id": segment_id, "is_active": state.is_active,
         "datetime": state.datetime, "qualified_at": state.qualified_at, "expires_at": state.expires_at}
        for (aam_uuid, segment_id), state in sorted(states.items())
    ]
    bulk.bulk_write(Membership, rows, unique=("device_id", "segment_id"),
                       update=("is_active", "datetime", "qualified_at", "expires_at", "updated_at"))


def write_changes(changes: list[Change]) -> None:
    rows = [
        {"aam_uuid": change.aam_uuid, "segment_id": change.segment_id,
         "is_active": change.kind is not ChangeKind.LEFT, "datetime": change.datetime,
         "is_onboarded": change.onboarded}
        for change in changes
    ]
    bulk.bulk_write(MembershipChange, rows)


def write_partner_ids(events: list[Event]) -> int:
    synced = sorted({(event.aam_uuid, event.dpid, event.dpuuid) for event in events
                     if event.type is EventType.ID_SYNC})
    rows = [{"device_id": aam_uuid, "dpid": dpid, "dpuuid": dpuuid} for aam_uuid, dpid, dpuuid in synced]
    bulk.bulk_write(PartnerId, rows, unique=("device_id", "dpid", "dpuuid"))
    return len(synced)


def request_erasures(events: list[Event], *, now: dt.datetime) -> None:
    """Ask `delivery.lifecycle.erasure` to forget each (known) opting-out device once its "0"s are out."""
    uuids = sorted({event.aam_uuid for event in events if event.type is EventType.OPT_OUT})
    if uuids:
        DeviceErasure.objects.bulk_create(
            [DeviceErasure(aam_uuid=uuid, reason=ErasureReason.OPT_OUT, requested_at=now) for uuid in uuids],
            update_conflicts=True, unique_fields=["aam_uuid"], update_fields=["reason"],
        )
