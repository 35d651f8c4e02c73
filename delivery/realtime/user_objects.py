"""The user objects of a real-time request: what a claimed device lists (CONTRACT §1.2, §2)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from delivery import dialect
from delivery.models import Membership, PartnerId
from delivery.sending.documents import ACTIVE, INACTIVE, SegmentStatus, UserObject
from delivery.sending.rounds import active_mapping_values
from destinations.models import Destination


class PendingDestinationDevice(NamedTuple):
    """A locked pending `DestinationDevice` row, with its device's regions."""

    pk: int
    device_id: str
    pending_since: dt.datetime
    left_segment_ids: list[int]
    regions: list[int]


def build_user_objects(
    *, destination: Destination, destination_devices: Sequence[PendingDestinationDevice], now: dt.datetime
) -> dict[str, list[UserObject]]:
    """Return the user objects of each destination device's device: [] when it has no listed segment.

    Listed: active memberships of segments mapped and active on `now`'s UTC date
    ("1"), then the segments in `left_segment_ids` still mapped and active and not
    re-entered ("0"), each with its membership's datetime. A membership whose TTL
    ended by `now` is not listed at all: the sweep ends it at its expiry and sends
    its "0" once (README "Decisions"). One user object per partner ID in the
    destination's `user_dpid` namespace, or one with "" when there is none.
    """
    device_ids = [destination_device.device_id for destination_device in destination_devices]
    mapped = active_mapping_values(destination=destination, today=now.astimezone(dt.UTC).date())
    memberships = _memberships(device_ids=device_ids, segment_ids=list(mapped), now=now)
    partner_ids = PartnerId.objects.dpuuids_by_device(device_ids=device_ids, dpid=destination.user_dpid)
    users: dict[str, list[UserObject]] = {}
    for destination_device in destination_devices:
        segments = _listed_segments(
            memberships=memberships[destination_device.device_id],
            left_segment_ids=destination_device.left_segment_ids,
            mapped=mapped,
        )
        if not segments:
            users[destination_device.device_id] = []
            continue
        users[destination_device.device_id] = [
            UserObject(
                aam_uuid=destination_device.device_id,
                partner_uuid=partner_uuid,
                regions=destination_device.regions or [],
                segments=segments,
            )
            for partner_uuid in partner_ids.get(destination_device.device_id, [""])
        ]
    return users


def _memberships(
    *, device_ids: list[str], segment_ids: list[int], now: dt.datetime
) -> defaultdict[str, dict[int, tuple[bool, dt.datetime]]]:
    """device → segment → (is_active, datetime), without the active memberships expired by `now`."""
    found: defaultdict[str, dict[int, tuple[bool, dt.datetime]]] = defaultdict(dict)
    if not segment_ids:
        return found
    for device_id, segment_id, is_active, moment in _membership_rows(
        device_ids=device_ids, segment_ids=segment_ids, now=now
    ):
        found[device_id][segment_id] = (is_active, moment)
    return found


def _membership_rows(
    *, device_ids: list[str], segment_ids: list[int], now: dt.datetime
) -> Iterable[tuple[str, int, bool, dt.datetime]]:
    # PostgreSQL: the claim's devices as one binary array bound on the server, the rows as tuples
    # (no query to build, no converters): this read was the claim's costliest in the worker's CPU.
    if not dialect.is_postgresql():
        return (
            Membership.objects.filter(device_id__any=device_ids, segment_id__any=segment_ids)
            .exclude(is_active=True, expires_at__lte=now)
            .order_by()  # read into a dict: the default ordering would only add a sort
            .values_list("device_id", "segment_id", "is_active", "datetime")
        )
    with dialect.server_side_cursor() as cursor:
        cursor.execute(
            f"""
            SELECT device_id, segment_id, is_active, datetime FROM {Membership._meta.db_table}
            WHERE device_id = ANY(%b::varchar[]) AND segment_id = ANY(%b::bigint[])
              AND NOT (is_active AND expires_at IS NOT NULL AND expires_at <= %s)
            """,  # noqa: S608 - the table name from the model
            [device_ids, segment_ids, now],
        )
        return cursor.fetchall()


def _listed_segments(
    *, memberships: dict[int, tuple[bool, dt.datetime]], left_segment_ids: list[int], mapped: dict[int, str]
) -> list[SegmentStatus]:
    active = [
        SegmentStatus(mapped[segment_id], ACTIVE, moment)
        for segment_id, (is_active, moment) in sorted(memberships.items())
        if is_active
    ]
    left = [
        SegmentStatus(mapped[segment_id], INACTIVE, memberships[segment_id][1])
        for segment_id in sorted(set(left_segment_ids))
        # A left segment re-entered since is listed once, as active, above.
        if segment_id in memberships and not memberships[segment_id][0]
    ]
    return active + left
