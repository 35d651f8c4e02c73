"""Events validated, all or nothing (CONTRACT §5): what an event is, and its first problem if any.

`delivery.intake.bodies` decodes request bodies into the raw values checked
here; the file import (`delivery.intake.importing`) checks its rows here too.

Validation is strict: exactly the keys of the event's type, integers that are
not booleans (IDs positive and within a bigint), `aam_uuid` (1..100
characters) without whitespace, '/' or control characters, `dpuuid` (1..255)
not blank and without control characters. `null` for an optional
key means "not given". `datetime` is ISO 8601; without a zone it is UTC;
default `now`; not before 1970 and at most `FUTURE_TOLERANCE` ahead of `now`.
An invalid item becomes an `EventError(index, field, message)`, `index`
0-based; `InvalidEvents` carries them all.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeGuard, TypeVar

_T = TypeVar("_T")

FUTURE_TOLERANCE = dt.timedelta(minutes=5)
EARLIEST_DATETIME = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# The largest value a PostgreSQL bigint holds: segment, dpid and region IDs are stored as one.
MAX_ID = 2**63 - 1
MAX_AAM_UUID_LENGTH = 100
MAX_DPUUID_LENGTH = 255

# An AAM UUID ends up in URLs (/api/v1/profiles/<aam_uuid>/) and in Adobe's
# space-separated batch format: no whitespace, slash or control character.
_AAM_UUID = re.compile(r"[^\s/\x00-\x1f\x7f]+")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class EventType(StrEnum):
    QUALIFICATION = "qualification"
    DISQUALIFICATION = "disqualification"
    ID_SYNC = "id_sync"
    OPT_OUT = "opt_out"


@dataclass(frozen=True, slots=True)
class Event:
    """One valid event. `datetime` is aware, in UTC."""

    type: EventType
    aam_uuid: str
    datetime: dt.datetime
    onboarded: bool = False
    segment_id: int | None = None  # qualification, disqualification
    regions: tuple[int, ...] = ()  # qualification
    dpid: int | None = None  # id_sync
    dpuuid: str | None = None  # id_sync


@dataclass(frozen=True, slots=True)
class EventError:
    """The first problem of one event; `index` None: the body as a whole."""

    index: int | None
    field: str
    message: str

    def as_dict(self) -> dict[str, object]:
        return {"index": self.index, "field": self.field, "message": self.message}


class IngestionError(Exception):
    """A body that cannot be accepted; `status` is the HTTP status to answer."""

    status = 400


class InvalidEvents(IngestionError):
    """Some events are invalid: nothing may be stored."""

    def __init__(self, errors: list[EventError]) -> None:
        super().__init__(f"{len(errors)} invalid event(s)")
        self.errors = errors


class InvalidField(ValueError):
    """One field of one event is invalid."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def validate_events(
    raws: Sequence[object], *, now: dt.datetime, known_errors: Sequence[EventError] = ()
) -> list[Event]:
    """Validate every item; raise `InvalidEvents` (with `known_errors` merged in) if any is bad."""
    skip = {error.index for error in known_errors}
    errors = list(known_errors)
    events: list[Event] = []
    for index, raw in enumerate(raws):
        if index in skip:
            continue
        try:
            events.append(validate_event(raw, now=now))
        except InvalidField as exc:
            errors.append(EventError(index, exc.field, exc.message))
    if errors:
        errors.sort(key=lambda error: error.index or 0)
        raise InvalidEvents(errors)
    return events


def validate_event(raw: object, *, now: dt.datetime) -> Event:
    """Turn one decoded JSON value into an `Event`; raise `InvalidField` at its first problem."""
    if not isinstance(raw, dict):
        raise InvalidField("event", "Each event must be a JSON object.")
    event_type = _event_type(raw)
    required = _REQUIRED_KEYS[event_type]
    allowed = {"type", "datetime", "onboarded", *required, *_EXTRA_OPTIONAL_KEYS.get(event_type, ())}
    unknown = sorted(key for key in raw if key not in allowed)
    if unknown:
        raise InvalidField(unknown[0], f"Unknown field for an event of type {event_type}.")
    for key in required:
        if raw.get(key) is None:
            raise InvalidField(key, "This field is required.")
    # Checked in this order, so that an event's first problem is the one reported.
    aam_uuid = _aam_uuid(raw["aam_uuid"], now)  # required for every type: checked above
    segment_id = _given(raw, "segment_id", _segment_id, now)
    dpid = _given(raw, "dpid", _dpid, now)
    dpuuid = _given(raw, "dpuuid", _dpuuid, now)
    when = _given(raw, "datetime", _datetime, now)
    regions = _given(raw, "regions", _regions, now)
    onboarded = _given(raw, "onboarded", _onboarded, now)
    return Event(
        type=event_type,
        aam_uuid=aam_uuid,
        datetime=now if when is None else when,
        onboarded=bool(onboarded),
        segment_id=segment_id,
        regions=regions or (),
        dpid=dpid,
        dpuuid=dpuuid,
    )


def _given(
    raw: dict[str, object], key: str, check: Callable[[object, dt.datetime], _T], now: dt.datetime
) -> _T | None:
    """`check`'s value for `raw[key]`; None when the key is absent or null ("not given")."""
    value = raw.get(key)
    return None if value is None else check(value, now)


def _event_type(raw: dict[str, object]) -> EventType:
    if raw.get("type") is None:
        raise InvalidField("type", "This field is required.")
    if not isinstance(raw["type"], str) or raw["type"] not in _EVENT_TYPES:
        choices = ", ".join(EventType)
        raise InvalidField("type", f"Unknown event type {raw['type']!r}: expected one of {choices}.")
    return EventType(raw["type"])


_EVENT_TYPES = frozenset(EventType)
# Required keys besides `type`, in the order they are checked (an event's first problem is reported).
_REQUIRED_KEYS: dict[EventType, tuple[str, ...]] = {
    EventType.QUALIFICATION: ("aam_uuid", "segment_id"),
    EventType.DISQUALIFICATION: ("aam_uuid", "segment_id"),
    EventType.ID_SYNC: ("aam_uuid", "dpid", "dpuuid"),
    EventType.OPT_OUT: ("aam_uuid",),
}
# Optional keys besides `datetime` and `onboarded`, which every type may carry.
_EXTRA_OPTIONAL_KEYS: dict[EventType, tuple[str, ...]] = {EventType.QUALIFICATION: ("regions",)}


def _aam_uuid(value: object, now: dt.datetime) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidField("aam_uuid", "aam_uuid must be a non-empty string.")
    if len(value) > MAX_AAM_UUID_LENGTH:
        raise InvalidField("aam_uuid", f"aam_uuid is longer than {MAX_AAM_UUID_LENGTH} characters.")
    if not _AAM_UUID.fullmatch(value):
        raise InvalidField("aam_uuid", "aam_uuid must not contain whitespace, '/' or control characters.")
    return value


def _dpuuid(value: object, now: dt.datetime) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidField("dpuuid", "dpuuid must be a non-empty string.")
    if len(value) > MAX_DPUUID_LENGTH:
        raise InvalidField("dpuuid", f"dpuuid is longer than {MAX_DPUUID_LENGTH} characters.")
    if _CONTROL_CHARACTERS.search(value):
        raise InvalidField("dpuuid", "dpuuid must not contain control characters.")
    return value


def _is_id(value: object) -> TypeGuard[int]:
    # bool is a subclass of int in Python, but `true` is not an ID.
    return type(value) is int and 0 < value <= MAX_ID


def _positive_id(field: str) -> Callable[[object, dt.datetime], int]:
    def check(value: object, now: dt.datetime) -> int:
        if not _is_id(value):
            raise InvalidField(field, f"{field} must be a positive integer (at most {MAX_ID}).")
        return value

    return check


_segment_id = _positive_id("segment_id")
_dpid = _positive_id("dpid")


def _regions(value: object, now: dt.datetime) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(_is_id(region) for region in value):
        raise InvalidField("regions", "regions must be a list of positive integers (DCS region IDs).")
    return tuple(sorted(set(value)))


def _onboarded(value: object, now: dt.datetime) -> bool:
    if not isinstance(value, bool):
        raise InvalidField("onboarded", "onboarded must be true or false.")
    return value


def _datetime(value: object, now: dt.datetime) -> dt.datetime:
    if not isinstance(value, str):
        raise InvalidField("datetime", "datetime must be an ISO 8601 string, e.g. 2016-07-27T16:17:22Z.")
    try:
        parsed = dt.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        parsed = parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise InvalidField(
            "datetime", f"datetime {value!r} is not a valid ISO 8601 time, e.g. 2016-07-27T16:17:22Z."
        ) from None
    if parsed < EARLIEST_DATETIME:
        raise InvalidField("datetime", "datetime must not be before 1970-01-01.")
    if parsed > now + FUTURE_TOLERANCE:
        raise InvalidField("datetime", "datetime is more than 5 minutes in the future.")
    return parsed

