"""Real-time pending marks (DESIGN.md "Membership rules"): which `DestinationDevice` rows owe a send.

The caller holds the changes' devices locked (`delivery.intake.storage`);
their `DestinationDevice` rows are locked here in (`destination_id`,
`device_id`) order, which every other writer uses too. Claims skip locked
rows (`SKIP LOCKED`) and find them pending after the commit.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from django.db import connection

from delivery import bulk, dialect
from delivery.intake.merging import Change, ChangeKind
from delivery.models import DestinationDevice
from destinations.models import Mapping

DestinationDeviceKey = tuple[int, str]  # (destination_id, aam_uuid)
_TABLE = DestinationDevice._meta.db_table

# Adobe's refresh rule: re-qualifying an active segment sends only if the
# device was last sent to the destination this long ago or more.
REFRESH_AFTER = dt.timedelta(days=3)


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
    destination_devices = _DestinationDevices(
        _lock_destination_devices({change.aam_uuid for change in changes})
    )
    marked: set[int] = set()
    for change in changes:
        if change.kind is not ChangeKind.LEFT:
            destination_devices.forget_left_segment(change.aam_uuid, change.segment_id)
        if not change.onboarded:
            concerned = destinations[change.segment_id]
            marked |= _mark_destinations(destination_devices, change, destination_ids=concerned, now=now)
    _write_destination_devices(destination_devices.changed())
    return marked


@dataclass(slots=True)
class _DestinationDeviceRow:
    """A `DestinationDevice` row being updated in memory."""

    pending_since: dt.datetime | None
    left_segment_ids: list[int]
    last_sent_at: dt.datetime | None
    is_changed: bool = False


class _DestinationDevices:
    """The `DestinationDevice` rows of the changes' devices: the locked ones, and those to create."""

    def __init__(self, locked: dict[DestinationDeviceKey, _DestinationDeviceRow]) -> None:
        self._by_key = locked
        self._by_device: dict[str, list[_DestinationDeviceRow]] = defaultdict(list)
        for (_, aam_uuid), destination_device in locked.items():
            self._by_device[aam_uuid].append(destination_device)

    def get_or_add(self, destination_id: int, aam_uuid: str) -> _DestinationDeviceRow:
        destination_device = self._by_key.get((destination_id, aam_uuid))
        if destination_device is None:
            destination_device = self._by_key[(destination_id, aam_uuid)] = _DestinationDeviceRow(
                None, [], None
            )
            self._by_device[aam_uuid].append(destination_device)
        return destination_device

    def forget_left_segment(self, aam_uuid: str, segment_id: int) -> None:
        for destination_device in self._by_device[aam_uuid]:
            if segment_id in destination_device.left_segment_ids:
                destination_device.left_segment_ids.remove(segment_id)
                destination_device.is_changed = True

    def changed(self) -> dict[DestinationDeviceKey, _DestinationDeviceRow]:
        return {
            key: destination_device
            for key, destination_device in self._by_key.items()
            if destination_device.is_changed
        }


def _mark_destinations(
    destination_devices: _DestinationDevices,
    change: Change,
    *,
    destination_ids: Iterable[int],
    now: dt.datetime,
) -> set[int]:
    """Mark the device at each destination, in order; return those that got work."""
    return {
        destination_id
        for destination_id in destination_ids
        if _mark(destination_devices.get_or_add(destination_id, change.aam_uuid), change, now=now)
    }


def _mark(destination_device: _DestinationDeviceRow, change: Change, *, now: dt.datetime) -> bool:
    """Mark one destination device for `change`; return whether its destination got work.

    (It got work when the device became pending, or already was.)
    """
    if change.kind is ChangeKind.REFRESHED and not (
        destination_device.last_sent_at is None or destination_device.last_sent_at <= now - REFRESH_AFTER
    ):
        return False
    if change.kind is ChangeKind.LEFT and change.segment_id not in destination_device.left_segment_ids:
        destination_device.left_segment_ids.append(change.segment_id)
        destination_device.is_changed = True
    if destination_device.pending_since is None:
        destination_device.pending_since = now
        destination_device.is_changed = True
    return True


def has_realtime_destinations(segment_ids: set[int], *, now: dt.datetime) -> bool:
    """Whether a real-time destination maps one of `segment_ids` on `now`'s UTC date."""
    return bool(_realtime_destinations(segment_ids, today=now.astimezone(dt.UTC).date()))


def _realtime_destinations(segment_ids: set[int], *, today: dt.date) -> defaultdict[int, list[int]]:
    """segment_id → the realtime destinations with a mapping of it active on `today`."""
    rows = (
        Mapping.objects.filter(segment_id__in=segment_ids, destination__realtime=True)
        .active_on(today)
        .order_by("segment_id", "destination_id")
        .values_list("segment_id", "destination_id")
    )
    destinations: defaultdict[int, list[int]] = defaultdict(list)
    for segment_id, destination_id in rows:
        destinations[segment_id].append(destination_id)
    return destinations


def _lock_destination_devices(aam_uuids: set[str]) -> dict[DestinationDeviceKey, _DestinationDeviceRow]:
    if dialect.is_postgresql():
        return _lock_destination_devices_postgresql(aam_uuids)
    rows = (
        DestinationDevice.objects.select_for_update()
        .filter(device_id__in=aam_uuids)
        .order_by("destination_id", "device_id")
        .values_list("destination_id", "device_id", "pending_since", "left_segment_ids", "last_sent_at")
    )
    return {(row[0], row[1]): _DestinationDeviceRow(row[2], list(row[3]), row[4]) for row in rows}


def _lock_destination_devices_postgresql(
    aam_uuids: set[str],
) -> dict[DestinationDeviceKey, _DestinationDeviceRow]:
    # As the portable query, with the devices as one array parameter (see `storage.lock_memberships`).
    sql = f"""
        SELECT destination_id, device_id, pending_since, left_segment_ids, last_sent_at FROM {_TABLE}
        WHERE device_id = ANY(%s) ORDER BY destination_id, device_id FOR UPDATE
    """  # noqa: S608 - the table name comes from the model, values are parameters
    with connection.cursor() as cursor:
        cursor.execute(sql, [sorted(aam_uuids)])
        rows = cursor.fetchall()
    return {(row[0], row[1]): _DestinationDeviceRow(row[2], list(_json(row[3])), row[4]) for row in rows}


def _json(value: str | bytes | list[int]) -> list[int]:
    """A jsonb list as Django's psycopg setup returns it: text, or already decoded."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _write_destination_devices(
    destination_devices: dict[DestinationDeviceKey, _DestinationDeviceRow],
) -> None:
    # Rows are locked or new (new ones only appear under the device lock held
    # since `upsert_and_lock_devices`), so writing the computed values is safe.
    # `in_flight_delivery` and `last_sent_at` belong to the sender: untouched.
    rows = [
        {
            "destination_id": destination_id,
            "device_id": aam_uuid,
            "pending_since": destination_device.pending_since,
            "left_segment_ids": destination_device.left_segment_ids,
        }
        for (destination_id, aam_uuid), destination_device in sorted(destination_devices.items())
    ]
    bulk.bulk_write(
        DestinationDevice,
        rows,
        unique=("destination_id", "device_id"),
        update=("pending_since", "left_segment_ids"),
    )
