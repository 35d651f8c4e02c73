"""The document a partner receives (CONTRACT §1): pure functions, no database, no network.

Partners parse these bytes, so the shape is fixed: keys in the contract's order,
every scalar a JSON string, times as `Wed Jul 27 16:17:42 UTC 2016` in UTC with
English names whatever the process's locale or time zone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

# Fixed tuples rather than strftime's %a/%b, which follow the C locale of the process.
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

ACTIVE = "1"
INACTIVE = "0"


@dataclass(frozen=True)
class SegmentStatus:
    """One entry of a user object's `Segments`: `status` is "1" (active) or "0" (left)."""

    segment_id: str
    status: str
    datetime: dt.datetime


@dataclass(frozen=True)
class UserObject:
    """One entry of `Users`: a device under one partner ID ("" when it has none)."""

    aam_uuid: str
    partner_uuid: str
    regions: Sequence[int]
    segments: Sequence[SegmentStatus]


# One entry of `Users` as it is serialised: AAM_UUID, DataPartner_UUID, AAM_Regions, Segments (in that order).
UserEntry = dict[str, object]


def format_aam_time(moment: dt.datetime) -> str:
    """Return `moment` as `EEE MMM dd HH:mm:ss UTC yyyy` in UTC; a naive moment is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    utc = moment.astimezone(dt.UTC)
    return (
        f"{DAY_NAMES[utc.weekday()]} {MONTH_NAMES[utc.month - 1]} {utc.day:02d} "
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d} UTC {utc.year:04d}"
    )


def format_regions(regions: Iterable[int]) -> list[str]:
    """Return the region IDs deduplicated, in ascending numeric order, as strings."""
    return [str(region) for region in sorted({int(region) for region in regions})]


def build_document(
    *,
    user_dpid: int | str,
    client_id: int | str,
    aam_destination_id: int | str,
    users: Sequence[UserObject],
    process_time: dt.datetime,
) -> bytes:
    """Return the UTF-8 JSON bytes of one document holding `users`, keys in the contract's order."""
    return build_document_of_entries(user_dpid=user_dpid, client_id=client_id,
                                     aam_destination_id=aam_destination_id,
                                     entries=[user_entry(user) for user in users], process_time=process_time)


def build_document_of_entries(
    *,
    user_dpid: int | str,
    client_id: int | str,
    aam_destination_id: int | str,
    entries: Sequence[UserEntry],
    process_time: dt.datetime,
) -> bytes:
    """`build_document` of `Users` entries already in their JSON shape (`user_entry`; the batch reads
    them so from PostgreSQL, `delivery.batch.reading`)."""
    document = {
        "ProcessTime": format_aam_time(process_time),
        "User_DPID": str(user_dpid),
        "Client_ID": str(client_id),
        "AAM_Destination_Id": str(aam_destination_id),
        "User_count": str(len(entries)),
        "Users": entries,
    }
    # orjson keeps insertion order, which is the order partners expect.
    return orjson.dumps(document)


def user_entry(user: UserObject) -> UserEntry:
    """`user` as its entry of `Users`: regions deduplicated ascending, times in AAM's format."""
    return {
        "AAM_UUID": user.aam_uuid,
        "DataPartner_UUID": user.partner_uuid,
        "AAM_Regions": format_regions(user.regions),
        "Segments": [
            {
                "Segment_ID": segment.segment_id,
                "Status": segment.status,
                "DateTime": format_aam_time(segment.datetime),
            }
            for segment in user.segments
        ],
    }
