"""Apply valid events to the database (DESIGN.md "Membership rules", SPEC §2 and §4).

`apply_events` writes, in one transaction and with bulk statements: segments
named for the first time, devices (last sighting, regions), partner IDs, the
memberships, one `MembershipChange` row per change, and the real-time pending
marks of `DestinationDevice`.

Merging: per (device, segment), events apply in `datetime` order, a
disqualification after a qualification of the same instant (it wins the tie).
An event older than the membership's `datetime` changes nothing; leaving a
segment the device is not active in sends nothing and logs no change, but
stores an inactive membership at the disqualification's `datetime`, so that
a qualification older than it, arriving later, cannot re-enter the segment:
it logs that exit instead, once (`_late_qualification`).

Opt-outs: each becomes a disqualification, at its `datetime`, of every
segment its device may be in, merged with the other events (`apply_opt_outs`).

Concurrency: every writer of a device's memberships first holds the device's
row lock. Devices are upserted and locked in one statement in `aam_uuid`
order (elsewhere than PostgreSQL: inserted, then locked in that order), so
concurrent ingests of the same devices queue instead of deadlocking; their
memberships, then their `DestinationDevice` rows, are locked next, the latter
in (`destination_id`, `device_id`) order, which other writers use too. Claims
skip locked rows (`SKIP LOCKED`) and find them pending after the commit.

Speed: on PostgreSQL each bulk write sends its rows as one JSON parameter
(`_bulk_write`); 10,000 events take a few hundred milliseconds. SQLite (the
demo's fallback) goes through Django's `bulk_create`.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

import orjson
from django.db import connection, transaction
from django.db.models import Field, Model, Q
from django.utils import timezone

from delivery.intake.events import Event, EventType
from delivery.models import (
    DestinationDevice,
    Device,
    DeviceErasure,
    ErasureReason,
    Membership,
    MembershipChange,
    PartnerId,
)
from destinations.models import Mapping, Segment

Key = tuple[str, int]  # (aam_uuid, segment_id)
PairKey = tuple[int, str]  # (destination_id, aam_uuid)

DEVICE_TABLE = Device._meta.db_table

# Adobe's refresh rule: re-qualifying an active segment sends only if the
# device was last sent to the destination this long ago or more.
REFRESH_AFTER = dt.timedelta(days=3)


class ChangeKind(StrEnum):
    ENTERED = "entered"  # was not active: sends "1"
    REFRESHED = "refreshed"  # was active already: new DateTime and TTL
    LEFT = "left"  # was active: sends "0"


@dataclass(frozen=True, slots=True)
class MembershipState:
    is_active: bool
    datetime: dt.datetime
    qualified_at: dt.datetime | None
    expires_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Change:
    aam_uuid: str
    segment_id: int
    kind: ChangeKind
    datetime: dt.datetime
    onboarded: bool


@dataclass(frozen=True)
class ApplyResult:
    events: int  # events applied (an opt-out of an unknown device is not)
    devices: int  # devices touched
    changes: int  # MembershipChange rows written
    partner_ids: int  # distinct partner IDs synced (new or known)
    destination_ids: set[int] = field(default_factory=set)  # destinations that got pending work


def compute_expires_at(*, qualified_at: dt.datetime, ttl_days: int) -> dt.datetime | None:
    """When a membership qualified at `qualified_at` ends (SPEC §4); None: never.

    `ttl_days` × 24 h later, except `ttl_days = 1`: 00:00 UTC two days after the
    UTC date of the qualification (Adobe's `24 + (24 - H)` hours).
    """
    if ttl_days == 0:
        return None
    if ttl_days == 1:
        day = qualified_at.astimezone(dt.UTC).date() + dt.timedelta(days=2)
        return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return qualified_at + dt.timedelta(days=ttl_days)


def apply_events(*, events: list[Event], now: dt.datetime) -> ApplyResult:
    """Store `events` (already valid) as of `now`; see the module docstring for the rules."""
    if not events:
        return ApplyResult(events=0, devices=0, changes=0, partner_ids=0)
    with transaction.atomic():
        ttl_days = _ensure_segments({event.segment_id for event in events if event.segment_id is not None})
        known_devices = _upsert_and_lock_devices(events)
        applied = [event for event in events if event.aam_uuid in known_devices]
        current = _lock_memberships(applied)
        merged = applied + _opt_outs_as_disqualifications(events=applied, current=current)
        states, changes = plan_memberships(events=merged, current=current, ttl_days=ttl_days)
        _write_memberships(states)
        _write_changes(changes)
        partner_ids = _write_partner_ids(applied)
        destination_ids = mark_pending(changes=changes, now=now)
        _request_erasures(applied, now=now)
    return ApplyResult(
        events=len(applied),
        devices=len(known_devices),
        changes=len(changes),
        partner_ids=partner_ids,
        destination_ids=destination_ids,
    )


def apply_opt_outs(*, events: list[Event], now: dt.datetime) -> ApplyResult:
    """Apply `opt_out` events alone: each ends every active membership of its device.

    An opt-out acts exactly as a disqualification, at the opt-out's `datetime`,
    of each segment the device is active in: the membership is left, a change
    is logged and each real-time destination mapping the segment is queued a
    "0". `apply_events` folds opt-outs into the same merge (see
    `_opt_outs_as_disqualifications`), so that a batch mixing them with
    qualifications obeys "the latest `datetime` wins".

    Each opting-out device also gets a `DeviceErasure` request:
    `delivery.lifecycle.erasure` erases it, its memberships and partner IDs once its
    "0"s are out, and removes it from stored documents (SPEC §4).
    """
    return apply_events(events=[event for event in events if event.type is EventType.OPT_OUT], now=now)


# ---- pure rules --------------------------------------------------------------------


def plan_memberships(
    *, events: Iterable[Event], current: dict[Key, MembershipState], ttl_days: dict[int, int]
) -> tuple[dict[Key, MembershipState], list[Change]]:
    """Merge `events` into the `current` memberships.

    `ttl_days` maps each qualified segment to its TTL. Returns the new state
    of every membership that changed and the changes, ordered by `datetime` (a
    disqualification after a qualification of the same instant), which is the
    order they took effect in.
    """
    by_key: dict[Key, list[Event]] = defaultdict(list)
    for event in events:
        if event.segment_id is not None:
            by_key[(event.aam_uuid, event.segment_id)].append(event)
    states: dict[Key, MembershipState] = {}
    changes: list[Change] = []
    for key, key_events in by_key.items():
        state = current.get(key)
        if len(key_events) > 1:
            key_events.sort(key=_merge_order)
        for event in key_events:
            previous = state
            kind, state = _apply_one(state, event, ttl_days=ttl_days)
            if state is not previous:
                states[key] = state
            if kind is not None:
                # The new state's datetime: the event's, or the stored exit's for a late qualification.
                changes.append(Change(key[0], key[1], kind, state.datetime, event.onboarded))
    changes.sort(key=lambda change: (change.datetime, change.kind is ChangeKind.LEFT))
    return states, changes


def _merge_order(event: Event) -> tuple[dt.datetime, bool]:
    return event.datetime, event.type is EventType.DISQUALIFICATION


def _apply_one(
    state: MembershipState | None, event: Event, *, ttl_days: dict[int, int]
) -> tuple[ChangeKind | None, MembershipState | None]:
    if event.type is EventType.QUALIFICATION:
        if state is not None and event.datetime <= state.datetime:
            return _late_qualification(state, event)
        kind = ChangeKind.REFRESHED if state is not None and state.is_active else ChangeKind.ENTERED
        expires_at = compute_expires_at(qualified_at=event.datetime, ttl_days=ttl_days[event.segment_id])
        return kind, MembershipState(True, event.datetime, event.datetime, expires_at)
    if state is not None and event.datetime < state.datetime:
        return None, state
    if state is None or not state.is_active:
        # Leaving a segment the device is not in sends nothing, but the
        # disqualification's datetime is kept so that an older qualification
        # arriving later cannot re-enter it (the latest datetime wins,
        # whatever the order of arrival).
        if state is not None and event.datetime == state.datetime:
            return None, state
        qualified_at = state.qualified_at if state is not None else None
        return None, MembershipState(False, event.datetime, qualified_at, None)
    return ChangeKind.LEFT, MembershipState(False, event.datetime, state.qualified_at, None)


def _late_qualification(state: MembershipState, event: Event) -> tuple[ChangeKind | None, MembershipState]:
    """A qualification not newer than the stored state (issue 10: the same outcome whatever the order).

    Usually a duplicate, or a tie a disqualification won: nothing. But when the
    stored state is a disqualification of a segment the device had not entered
    (inactive, never qualified), this qualification shows the device was in the
    segment until then: that disqualification left it, so the exit is logged now,
    at its datetime, as if the events had arrived in datetime order ("0").
    """
    if state.is_active or state.qualified_at is not None:
        return None, state
    return ChangeKind.LEFT, MembershipState(False, state.datetime, event.datetime, None)


def _opt_outs_as_disqualifications(
    *, events: list[Event], current: dict[Key, MembershipState]
) -> list[Event]:
    """One disqualification per opt-out and segment the device may be in by then."""
    opt_outs = [event for event in events if event.type is EventType.OPT_OUT]
    if not opt_outs:
        return []
    segments: dict[str, set[int]] = defaultdict(set)
    for aam_uuid, segment_id in current:
        segments[aam_uuid].add(segment_id)
    for event in events:
        if event.segment_id is not None:
            segments[event.aam_uuid].add(event.segment_id)
    return [
        Event(type=EventType.DISQUALIFICATION, aam_uuid=opt_out.aam_uuid, datetime=opt_out.datetime,
              onboarded=opt_out.onboarded, segment_id=segment_id)
        for opt_out in opt_outs
        for segment_id in sorted(segments[opt_out.aam_uuid])
    ]


def _request_erasures(events: list[Event], *, now: dt.datetime) -> None:
    """Ask `delivery.lifecycle.erasure` to forget each (known) opting-out device once its "0"s are out."""
    uuids = sorted({event.aam_uuid for event in events if event.type is EventType.OPT_OUT})
    if uuids:
        DeviceErasure.objects.bulk_create(
            [DeviceErasure(aam_uuid=uuid, reason=ErasureReason.OPT_OUT, requested_at=now) for uuid in uuids],
            update_conflicts=True, unique_fields=["aam_uuid"], update_fields=["reason"],
        )


# ---- reading and writing ----------------------------------------------------------


def _ensure_segments(segment_ids: set[int]) -> dict[int, int]:
    """Create the segments not configured yet (default TTL); return every segment's `ttl_days`."""
    ttl_days = dict(Segment.objects.filter(id__in=segment_ids).values_list("id", "ttl_days"))
    missing = sorted(segment_ids - ttl_days.keys())
    if missing:
        Segment.objects.bulk_create([Segment(id=segment_id) for segment_id in missing], ignore_conflicts=True)
        ttl_days.update(Segment.objects.filter(id__in=missing).values_list("id", "ttl_days"))
    return ttl_days


def _upsert_and_lock_devices(events: list[Event]) -> set[str]:
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
        {"aam_uuid": uuid, "last_seen": last_seen[uuid], "regions": sorted(regions[uuid]),
         "creates": uuid in creators}
        for uuid in sorted(last_seen)
    ]
    if connection.vendor == "postgresql":
        return _upsert_devices_postgresql(rows)
    return _upsert_devices_portable(rows)


def _upsert_devices_postgresql(rows: list[dict[str, object]]) -> set[str]:
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


def _upsert_devices_portable(rows: list[dict[str, object]]) -> set[str]:
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


def _lock_memberships(events: list[Event]) -> dict[Key, MembershipState]:
    """Lock and read the memberships the events may change (all of an opting-out device's)."""
    devices = {event.aam_uuid for event in events if event.segment_id is not None}
    segments = {event.segment_id for event in events if event.segment_id is not None}
    opting_out = {event.aam_uuid for event in events if event.type is EventType.OPT_OUT}
    if not devices and not opting_out:
        return {}
    rows = (
        Membership.objects.select_for_update()
        .filter(Q(device_id__in=devices, segment_id__in=segments) | Q(device_id__in=opting_out))
        .order_by("device_id", "segment_id")
        .values_list("device_id", "segment_id", "is_active", "datetime", "qualified_at", "expires_at")
    )
    return {(row[0], row[1]): MembershipState(*row[2:]) for row in rows}


def _write_memberships(states: dict[Key, MembershipState]) -> None:
    rows = [
        {"device_id": aam_uuid, "segment_id": segment_id, "is_active": state.is_active,
         "datetime": state.datetime, "qualified_at": state.qualified_at, "expires_at": state.expires_at}
        for (aam_uuid, segment_id), state in sorted(states.items())
    ]
    _bulk_write(Membership, rows, unique=("device_id", "segment_id"),
               update=("is_active", "datetime", "qualified_at", "expires_at", "updated_at"))


def _write_changes(changes: list[Change]) -> None:
    rows = [
        {"aam_uuid": change.aam_uuid, "segment_id": change.segment_id,
         "is_active": change.kind is not ChangeKind.LEFT, "datetime": change.datetime,
         "is_onboarded": change.onboarded}
        for change in changes
    ]
    _bulk_write(MembershipChange, rows)


def _write_partner_ids(events: list[Event]) -> int:
    synced = sorted({(event.aam_uuid, event.dpid, event.dpuuid) for event in events
                     if event.type is EventType.ID_SYNC})
    rows = [{"device_id": aam_uuid, "dpid": dpid, "dpuuid": dpuuid} for aam_uuid, dpid, dpuuid in synced]
    _bulk_write(PartnerId, rows, unique=("device_id", "dpid", "dpuuid"))
    return len(synced)


def _bulk_write(
    model: type[Model], rows: list[dict[str, object]], *, unique: tuple[str, ...] = (),
    update: tuple[str, ...] = (),
) -> None:
    """Insert `rows` (column → value) in their order; on a conflict over `unique`,
    update the `update` columns, or skip the row when `update` is empty."""
    if not rows:
        return
    if connection.vendor == "postgresql":
        _bulk_write_postgresql(model, rows, unique=unique, update=update)
        return
    model.objects.bulk_create(
        [model(**row) for row in rows], ignore_conflicts=bool(unique) and not update,
        update_conflicts=bool(update), unique_fields=unique or None, update_fields=update or None,
    )


def _bulk_write_postgresql(
    model: type[Model], rows: list[dict[str, object]], *, unique: tuple[str, ...], update: tuple[str, ...]
) -> None:
    # Django's bulk_create spends most of its time building model instances and
    # adapting values one by one; here the rows travel as one JSON parameter,
    # several times faster for thousands of rows. Timestamps are filled in.
    quote = connection.ops.quote_name
    fields = {field.column: field for field in model._meta.concrete_fields}
    columns = list(rows[0])
    stamps = [column for column, field in fields.items() if column not in columns and _is_timestamp(field)]
    record = ", ".join(f"{quote(column)} {fields[column].db_type(connection)}" for column in columns)
    names = ", ".join(quote(column) for column in columns)
    # Only quoted names from the model go into the text; every value is a parameter.
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(map(quote, columns + stamps))}) "  # noqa: S608
        f"SELECT {names}{', %s' * len(stamps)} "
        f"FROM ROWS FROM (json_to_recordset(%s::json) AS ({record})) "
        f"WITH ORDINALITY AS r({names}, row_number_) ORDER BY r.row_number_"
    )
    if unique:
        updates = ", ".join(f"{quote(column)} = EXCLUDED.{quote(column)}" for column in update)
        sql += f" ON CONFLICT ({', '.join(map(quote, unique))}) " + (f"DO UPDATE SET {updates}" if update
                                                                      else "DO NOTHING")
    with connection.cursor() as cursor:
        cursor.execute(sql, [timezone.now()] * len(stamps) + [orjson.dumps(rows).decode()])


def _is_timestamp(field: Field) -> bool:
    return bool(getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False))


# ---- real-time pending marks ------------------------------------------------------


@dataclass(slots=True)
class _PairState:
    """A `DestinationDevice` row being updated in memory."""

    pending_since: dt.datetime | None
    left_segment_ids: list[int]
    last_sent_at: dt.datetime | None
    is_changed: bool = False


def mark_pending(*, changes: list[Change], now: dt.datetime) -> set[int]:
    """Queue the changes' devices to the real-time destinations concerned; return those destinations.

    Per DESIGN.md: for each destination with `realtime` and a mapping of the
    segment active on `now`'s UTC date, and changes not onboarded, an entry
    marks the device pending, a refresh does only under the 3-day rule, an exit
    adds the segment to `left_segment_ids` (once) and marks it pending.
    `pending_since` keeps its first value. Any entry or refresh also takes the
    segment out of the device's `left_segment_ids` everywhere: the latest event
    wins, so a "0" still waiting would be stale.
    """
    if not changes:
        return set()
    today = now.astimezone(dt.UTC).date()
    destinations = _realtime_destinations({change.segment_id for change in changes}, today=today)
    pairs = _lock_destination_devices({change.aam_uuid for change in changes})
    by_device: dict[str, list[_PairState]] = defaultdict(list)
    for (_, aam_uuid), pair in pairs.items():
        by_device[aam_uuid].append(pair)
    marked: set[int] = set()
    for change in changes:
        if change.kind is not ChangeKind.LEFT:
            _forget_left_segment(by_device[change.aam_uuid], change.segment_id)
        if change.onboarded:
            continue
        for destination_id in destinations.get(change.segment_id, ()):
            pair = pairs.get((destination_id, change.aam_uuid))
            if pair is None:
                pair = pairs[(destination_id, change.aam_uuid)] = _PairState(None, [], None)
                by_device[change.aam_uuid].append(pair)
            if _mark(pair, change, now=now):
                marked.add(destination_id)
    _write_pairs({key: pair for key, pair in pairs.items() if pair.is_changed})
    return marked


def _mark(pair: _PairState, change: Change, *, now: dt.datetime) -> bool:
    """Mark one pair for `change`; return whether the destination got work (pending or not before)."""
    if change.kind is ChangeKind.REFRESHED and not (
        pair.last_sent_at is None or pair.last_sent_at <= now - REFRESH_AFTER
    ):
        return False
    if change.kind is ChangeKind.LEFT and change.segment_id not in pair.left_segment_ids:
        pair.left_segment_ids.append(change.segment_id)
        pair.is_changed = True
    if pair.pending_since is None:
        pair.pending_since = now
        pair.is_changed = True
    return True


def _forget_left_segment(pairs: list[_PairState], segment_id: int) -> None:
    for pair in pairs:
        if segment_id in pair.left_segment_ids:
            pair.left_segment_ids.remove(segment_id)
            pair.is_changed = True


def _realtime_destinations(segment_ids: set[int], *, today: dt.date) -> dict[int, list[int]]:
    """segment_id → the realtime destinations with a mapping of it active on `today`."""
    rows = (
        Mapping.objects.filter(segment_id__in=segment_ids, destination__realtime=True)
        .active_on(today)
        .order_by("segment_id", "destination_id")
        .values_list("segment_id", "destination_id")
    )
    destinations: dict[int, list[int]] = defaultdict(list)
    for segment_id, destination_id in rows:
        destinations[segment_id].append(destination_id)
    return destinations


def _lock_destination_devices(aam_uuids: set[str]) -> dict[PairKey, _PairState]:
    rows = (
        DestinationDevice.objects.select_for_update()
        .filter(device_id__in=aam_uuids)
        .order_by("destination_id", "device_id")
        .values_list("destination_id", "device_id", "pending_since", "left_segment_ids", "last_sent_at")
    )
    return {(row[0], row[1]): _PairState(row[2], list(row[3]), row[4]) for row in rows}


def _write_pairs(pairs: dict[PairKey, _PairState]) -> None:
    # Rows are locked or new (new ones only appear under the device lock held
    # since `_upsert_and_lock_devices`), so writing the computed values is safe.
    # `in_flight_delivery` and `last_sent_at` belong to the sender: untouched.
    rows = [
        {"destination_id": destination_id, "device_id": aam_uuid, "pending_since": pair.pending_since,
         "left_segment_ids": pair.left_segment_ids}
        for (destination_id, aam_uuid), pair in sorted(pairs.items())
    ]
    _bulk_write(DestinationDevice, rows, unique=("destination_id", "device_id"),
               update=("pending_since", "left_segment_ids"))
