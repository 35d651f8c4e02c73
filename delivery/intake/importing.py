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
chunks, all in one transaction (all or nothing, also if the import is
interrupted). An Adobe file on PostgreSQL goes through
`delivery.intake.staging` (COPY into a staging table, set-based merges,
`STAGED_CHUNK_EVENTS` at a time); any other file through
`delivery.intake.membership.apply_events`, `CHUNK_EVENTS` at a time. Memory
stays bounded whatever the file's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from delivery import dialect
from delivery.intake.events import Event, InvalidField
from delivery.intake.lines import (
    Defaults,
    FileFormat,
    detect_format,
    is_simple_adobe_line,
    open_events_file,
    parse_line,
    read_lines,
    staged_line,
)
from delivery.intake.membership import apply_events
from delivery.intake.staging import StagedChunk

__all__ = [
    "Defaults", "FileFormat", "ImportResult", "LineError", "check_file", "detect_format", "import_events",
    "parse_line",
]

CHUNK_EVENTS = 10_000  # events applied at once through `apply_events`
STAGED_CHUNK_EVENTS = 1_000_000  # events of an Adobe file staged at once on PostgreSQL
PROGRESS_EVERY_LINES = 1_000


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


# ---- importing --------------------------------------------------------------------------


def check_file(
    path: Path, *, defaults: Defaults, on_error: Callable[[LineError], None], progress: Progress | None = None
) -> int:
    """Read every line without storing anything; report each invalid one; return how many are invalid."""
    invalid = 0
    for number, line, file_format in _lines(path, progress=progress):
        try:
            if file_format is not FileFormat.ADOBE or not is_simple_adobe_line(line):
                parse_line(line, file_format=file_format, defaults=defaults)
        except InvalidField as error:
            invalid += 1
            on_error(LineError(number, error.field, error.message))
    return invalid


def import_events(
    path: Path,
    *,
    defaults: Defaults,
    skip_invalid: bool,
    on_error: Callable[[LineError], None],
    on_chunk: Callable[[set[int]], None] = lambda destination_ids: None,
    progress: Progress | None = None,
    chunk_events: int | None = None,
) -> ImportResult:
    """Import `path`: check it, then apply its events in chunks (see the module docstring).

    `on_chunk` gets, after the commit, the destinations each chunk gave
    real-time work (the caller wakes them). Invalid lines go to `on_error`.
    """
    result = ImportResult()
    if not skip_invalid:
        result.invalid = check_file(path, defaults=defaults, on_error=on_error, progress=progress)
        if result.invalid:
            return result
    woken: list[set[int]] = []
    load = _load_staged if dialect.is_postgresql() and _format_of(path) is FileFormat.ADOBE else _load_events
    with transaction.atomic():
        load(path, defaults=defaults, result=result, on_error=on_error, woken=woken.append,
             progress=progress, chunk_events=chunk_events)
    for destination_ids in woken:
        on_chunk(destination_ids)
    result.stored = True
    return result


def _load_events(
    path: Path, *, defaults: Defaults, result: ImportResult, on_error: Callable[[LineError], None],
    woken: Callable[[set[int]], None], progress: Progress | None, chunk_events: int | None,
) -> None:
    pending: list[Event] = []
    for number, line, file_format in _lines(path, progress=progress):
        result.lines += 1
        try:
            pending.extend(parse_line(line, file_format=file_format, defaults=defaults))
        except InvalidField as error:
            result.invalid += 1
            on_error(LineError(number, error.field, error.message))
            continue
        if len(pending) >= (chunk_events or CHUNK_EVENTS):
            _apply(pending, result=result, woken=woken)
            pending = []
    _apply(pending, result=result, woken=woken)


def _apply(events: list[Event], *, result: ImportResult, woken: Callable[[set[int]], None]) -> None:
    if not events:
        return
    applied = apply_events(events=events, now=timezone.now())
    result.events += applied.events
    result.changes += applied.changes
    woken(applied.destination_ids)


def _load_staged(
    path: Path, *, defaults: Defaults, result: ImportResult, on_error: Callable[[LineError], None],
    woken: Callable[[set[int]], None], progress: Progress | None, chunk_events: int | None,
) -> None:
    chunk = StagedChunk()
    for number, line, _ in _lines(path, progress=progress):
        result.lines += 1
        try:
            aam_uuid, added, removed, events = staged_line(line, defaults=defaults)
        except InvalidField as error:
            result.invalid += 1
            on_error(LineError(number, error.field, error.message))
            continue
        if events:
            chunk.add(aam_uuid, added, removed, events=events)
        if chunk.events >= (chunk_events or STAGED_CHUNK_EVENTS):
            _merge(chunk, defaults=defaults, result=result, woken=woken)
            chunk = StagedChunk()
    _merge(chunk, defaults=defaults, result=result, woken=woken)


def _merge(chunk: StagedChunk, *, defaults: Defaults, result: ImportResult,
           woken: Callable[[set[int]], None]) -> None:
    merged = chunk.merge(at=defaults.datetime, onboarded=defaults.onboarded)
    if merged.events:
        result.events += merged.events
        result.changes += merged.changes
        woken(set(merged.destination_ids))
def _format_of(path: Path) -> FileFormat:
    with open_events_file(path) as stream:
        for _, line in read_lines(stream):
            return detect_format(line)
    return FileFormat.ADOBE


def _lines(path: Path, *, progress: Progress | None) -> Iterator[tuple[int, bytes, FileFormat]]:
    """(line number, line, the file's format) for each non-blank line, reporting `progress`."""
    with open_events_file(path) as stream:
        # A gzip file's progress is its compressed position, to compare with the file's size.
        raw = getattr(stream, "fileobj", None) or stream
        file_format: FileFormat | None = None
        lines = 0
        for number, line in read_lines(stream):
            lines += 1
            file_format = file_format or detect_format(line)
            yield number, line, file_format
            if progress is not None and lines % PROGRESS_EVERY_LINES == 0:
                progress(raw.tell(), lines)
        if progress is not None:
            progress(raw.tell(), lines)
