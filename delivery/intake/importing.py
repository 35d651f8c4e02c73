"""Event files for `manage.py ingest` (CONTRACT §6): NDJSON, or Adobe's batch line format.

The format is told by the content: a file whose first non-blank line starts
with `{` is NDJSON (one event object per line, validated exactly as the API
validates them, `delivery.intake.events.validate_event`); anything else is Adobe's
batch line format, `AAM_UUID<space>SEG,SEG<space>REMOVED,REMOVED`: one
qualification per added segment and one disqualification per removed one. An
empty column is nothing between the separators (`uuid  12`: nothing added, 12
removed); the third column may be absent. Files may be gzip-compressed.

Lines are numbered from 1 as an editor shows them; blank lines are skipped.
Events without a `datetime` (every Adobe line) take `Defaults.datetime`, and
`Defaults.onboarded` marks every event onboarded.

`import_events` streams the file: it first checks every line (nothing is
stored if one is invalid, unless `skip_invalid`), then applies the events in
chunks of `CHUNK_EVENTS` with `delivery.intake.membership.apply_events`, one
transaction each. Memory stays bounded whatever the file's size.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

import orjson
from django.utils import timezone

from delivery.intake.events import Event, EventType, InvalidField, validate_event
from delivery.intake.membership import apply_events

CHUNK_EVENTS = 10_000
PROGRESS_EVERY_LINES = 1_000
_SEGMENT_ID = re.compile(r"[0-9]+")
_GZIP_MAGIC = b"\x1f\x8b"


class FileFormat(StrEnum):
    NDJSON = "ndjson"
    ADOBE = "adobe"


@dataclass(frozen=True)
class Defaults:
    """What a file's events get unless they say otherwise."""

    datetime: dt.datetime  # for events without one (aware, UTC)
    onboarded: bool = False
    now: dt.datetime = field(default_factory=timezone.now)  # "more than 5 minutes in the future" is invalid


@dataclass(frozen=True)
class LineError:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


@dataclass
class ImportResult:
    lines: int = 0  # non-blank lines read
    invalid: int = 0  # invalid lines (skipped, or the reason nothing was stored)
    events: int = 0  # events applied
    changes: int = 0  # membership changes they made
    stored: bool = False  # False: nothing stored because of invalid lines


Progress = Callable[[int, int], None]  # (bytes read, lines read)


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


# ---- importing --------------------------------------------------------------------------


def check_file(
    path: Path, *, defaults: Defaults, on_error: Callable[[LineError], None], progress: Progress | None = None
) -> int:
    """Read every line without storing anything; report each invalid one; return how many are invalid."""
    invalid = 0
    for _, error in _parsed(path, defaults=defaults, progress=progress):
        if error is not None:
            invalid += 1
            on_error(error)
    return invalid


def import_events(
    path: Path,
    *,
    defaults: Defaults,
    skip_invalid: bool,
    on_error: Callable[[LineError], None],
    on_chunk: Callable[[set[int]], None] = lambda destination_ids: None,
    progress: Progress | None = None,
    chunk_events: int = CHUNK_EVENTS,
) -> ImportResult:
    """Import `path`: check it, then apply its events in chunks (see the module docstring).

    `on_chunk` gets, after each chunk's commit, the destinations given
    real-time work (the caller wakes them). Invalid lines go to `on_error`.
    """
    result = ImportResult()
    if not skip_invalid:
        result.invalid = check_file(path, defaults=defaults, on_error=on_error, progress=progress)
        if result.invalid:
            return result
    pending: list[Event] = []
    for events, error in _parsed(path, defaults=defaults, progress=progress):
        result.lines += 1
        if error is not None:
            result.invalid += 1
            if skip_invalid:
                on_error(error)
            continue
        pending.extend(events)
        if len(pending) >= chunk_events:
            _apply(pending, result=result, on_chunk=on_chunk)
            pending = []
    _apply(pending, result=result, on_chunk=on_chunk)
    result.stored = True
    return result


def _apply(events: list[Event], *, result: ImportResult, on_chunk: Callable[[set[int]], None]) -> None:
    if not events:
        return
    applied = apply_events(events=events, now=timezone.now())
    result.events += applied.events
    result.changes += applied.changes
    on_chunk(applied.destination_ids)


def _parsed(
    path: Path, *, defaults: Defaults, progress: Progress | None
) -> Iterator[tuple[list[Event], LineError | None]]:
    with open_events_file(path) as stream:
        # A gzip file's progress is its compressed position, to compare with the file's size.
        raw = getattr(stream, "fileobj", None) or stream
        file_format: FileFormat | None = None
        lines = 0
        for number, line in read_lines(stream):
            lines += 1
            file_format = file_format or detect_format(line)
            try:
                yield parse_line(line, file_format=file_format, defaults=defaults), None
            except InvalidField as invalid:
                yield [], LineError(number, invalid.field, invalid.message)
            if progress is not None and lines % PROGRESS_EVERY_LINES == 0:
                progress(raw.tell(), lines)
        if progress is not None:
            progress(raw.tell(), lines)
