"""The lines of an event file (`manage.py ingest`, CONTRACT §6): NDJSON or Adobe's batch line format.

See `delivery.intake.importing` for the formats. `parse_line` turns a line
into events, or says why it is invalid; `staged_line` turns a valid Adobe
line into the columns `delivery.intake.staging` copies, without an `Event`
per segment for the lines that are certainly valid (`_SIMPLE_ADOBE_LINE`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

import orjson
from django.utils import timezone

from delivery.intake.events import Event, EventType, InvalidField, validate_event

_SEGMENT_ID = re.compile(r"[0-9]+")
_GZIP_MAGIC = b"\x1f\x8b"
# An Adobe line that is certainly valid, told without decoding it: a printable ASCII AAM UUID without
# '/' nor '\\', and IDs of at most 18 digits without a leading zero (within a bigint). Any other line
# (a longer ID, a non-ASCII AAM UUID, an invalid line) goes through `parse_line`, which says why.
_SIMPLE_IDS = rb"(?:[1-9][0-9]{0,17}(?:,[1-9][0-9]{0,17})*)?"
_SIMPLE_ADOBE_LINE = re.compile(rb"([!-.0-\[\]-~]{1,100}) (%s)(?: (%s))?" % (_SIMPLE_IDS, _SIMPLE_IDS))

StagedLine = tuple[bytes, bytes, bytes, int]  # (aam_uuid, added IDs, removed IDs, events), as staged


class FileFormat(StrEnum):
    NDJSON = "ndjson"
    ADOBE = "adobe"


@dataclass(frozen=True)
class Defaults:
    """What a file's events get unless they say otherwise."""

    datetime: dt.datetime  # for events without one (aware, UTC)
    onboarded: bool = False
    now: dt.datetime = field(default_factory=timezone.now)  # "more than 5 minutes in the future" is invalid



def open_events_file(path: Path) -> BinaryIO:
    """Open `path` for reading, decompressing it when it is gzip."""
    with path.open("rb") as probe:
        is_gzip = probe.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if is_gzip else path.open("rb")  # type: ignore[return-value]


def detect_format(line: bytes) -> FileFormat:
    """NDJSON when the first non-blank line starts with `{`, else Adobe's batch line format."""
    return FileFormat.NDJSON if line.lstrip().startswith(b"{") else FileFormat.ADOBE


def read_lines(stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """Yield (line number from 1, line without its end) for each non-blank line."""
    for number, raw in enumerate(stream, start=1):
        line = raw.rstrip(b"\r\n")
        if line.strip():
            yield number, line


def parse_line(line: bytes, *, file_format: FileFormat, defaults: Defaults) -> list[Event]:
    """The events of one line; raise `InvalidField` at its first problem."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidField("line", "This line is not valid UTF-8.") from None
    if file_format is FileFormat.NDJSON:
        return [_parse_ndjson(text, defaults=defaults)]
    return _parse_adobe(text, defaults=defaults)


def _parse_ndjson(text: str, *, defaults: Defaults) -> Event:
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidField("event", f"This line is not valid JSON: {exc}.") from None
    event = validate_event(raw, now=defaults.now)
    if raw.get("datetime") is None:
        event = dataclasses.replace(event, datetime=defaults.datetime)
    return dataclasses.replace(event, onboarded=True) if defaults.onboarded else event


def _parse_adobe(text: str, *, defaults: Defaults) -> list[Event]:
    columns = text.split(" ")
    if len(columns) not in (2, 3):
        raise InvalidField(
            "line", f"Expected AAM_UUID SEGMENTS [REMOVED_SEGMENTS] separated by single spaces, "
                    f"found {len(columns)} column(s)."
        )
    aam_uuid, added, removed = columns[0], _segment_ids(columns[1], "segments"), _segment_ids(
        columns[2] if len(columns) == 3 else "", "removed_segments"
    )
    both = sorted(set(added) & set(removed))
    if both:
        raise InvalidField("removed_segments", f"Segment {both[0]} is both added and removed.")
    raws = [{"type": EventType.QUALIFICATION.value, "aam_uuid": aam_uuid, "segment_id": segment_id}
            for segment_id in added]
    raws += [{"type": EventType.DISQUALIFICATION.value, "aam_uuid": aam_uuid, "segment_id": segment_id}
             for segment_id in removed]
    if not raws:  # nothing added nor removed: still check the AAM UUID
        validate_event({"type": EventType.OPT_OUT.value, "aam_uuid": aam_uuid}, now=defaults.now)
    return [
        dataclasses.replace(validate_event(raw, now=defaults.now), datetime=defaults.datetime,
                            onboarded=defaults.onboarded)
        for raw in raws
    ]


def _segment_ids(column: str, name: str) -> list[int]:
    if column == "":
        return []
    ids = []
    for item in column.split(","):
        if not _SEGMENT_ID.fullmatch(item):
            shown = repr(item) if item else "an empty item"
            raise InvalidField(name, f"Segment IDs are comma-separated positive integers; found {shown}.")
        ids.append(int(item))
    return list(dict.fromkeys(ids))



def _simple_line(line: bytes) -> StagedLine | None:
    """(AAM UUID, added, removed, segment count) of a line certainly valid as it is; None: parse it."""
    match = _SIMPLE_ADOBE_LINE.fullmatch(line)
    if match is None:
        return None
    added, removed = match[2], match[3] or b""
    added_ids = set(added.split(b",")) if added else set()
    removed_ids = set(removed.split(b",")) if removed else set()
    if added_ids & removed_ids:
        return None
    return match[1], added, removed, len(added_ids) + len(removed_ids)


def staged_line(line: bytes, *, defaults: Defaults) -> StagedLine:
    """The columns `StagedChunk.add` takes for a valid Adobe line; raise `InvalidField` otherwise."""
    simple = _simple_line(line)
    if simple is not None:
        return simple
    events = parse_line(line, file_format=FileFormat.ADOBE, defaults=defaults)
    if not events:
        return b"", b"", b"", 0
    added = ",".join(str(event.segment_id) for event in events if event.type is EventType.QUALIFICATION)
    removed = ",".join(str(event.segment_id) for event in events if event.type is EventType.DISQUALIFICATION)
    # COPY's text format: the AAM UUID has no tab nor newline (no whitespace), a backslash is doubled.
    aam_uuid = events[0].aam_uuid.replace("\\", "\\\\").encode()
    return aam_uuid, added.encode(), removed.encode(), len(events)


def is_simple_adobe_line(line: bytes) -> bool:
    return _simple_line(line) is not None
