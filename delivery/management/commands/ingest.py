"""`manage.py ingest FILE [--onboarded] [--datetime ISO] [--skip-invalid] [--progress]` (CONTRACT §6).

Loads NDJSON or Adobe's batch line format (`delivery.intake.importing`). Invalid lines
are reported on stderr with their line numbers; then nothing is stored unless
`--skip-invalid`, and the exit status is 1 either way. Events without a
datetime take `--datetime`, or else the file's modification time: importing
the same file twice then changes nothing, so partners get nothing new.
A progress bar goes to stderr when it is a terminal, or with `--progress`.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.utils import timezone

from delivery import tasks
from delivery.counters import count_events_ingested
from delivery.intake.events import InvalidField, validate_event
from delivery.intake.importing import Defaults, LineError, import_events

PROGRESS_INTERVAL_S = 0.2
BAR_WIDTH = 30


class Command(BaseCommand):
    help = "Load events from an NDJSON file or a file in Adobe's batch line format (gzip accepted)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="NDJSON, or AAM_UUID SEG,SEG REMOVED,REMOVED lines.")
        parser.add_argument("--onboarded", action="store_true",
                            help="Mark every event onboarded (sent in batches only).")
        parser.add_argument("--datetime", dest="at", metavar="ISO",
                            help="The datetime of events without one (default: the file's mtime).")
        parser.add_argument("--skip-invalid", action="store_true",
                            help="Store the valid lines even when some are invalid.")
        parser.add_argument("--progress", action="store_true",
                            help="Show progress even when stderr is not a terminal.")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"{path}: no such file.")
        now = timezone.now()
        defaults = Defaults(datetime=self._default_datetime(options["at"], path=path, now=now),
                            onboarded=options["onboarded"], now=now)
        show_progress = options["progress"] or self.stderr.isatty()
        bar = ProgressBar(self.stderr, total=path.stat().st_size, passes=1 if options["skip_invalid"] else 2)
        result = import_events(
            path,
            defaults=defaults,
            skip_invalid=options["skip_invalid"],
            on_error=self._report,
            on_chunk=_wake,
            progress=bar if show_progress else None,
        )
        _count(result.events)
        if result.stored:
            self.stdout.write(f"Ingested {result.events} events from {result.lines} lines "
                              f"({result.changes} membership changes).")
        if result.invalid:
            what = "skipped" if result.stored else "nothing was stored"
            raise CommandError(f"{result.invalid} invalid line(s); {what}.", returncode=1)

    def _default_datetime(self, value: str | None, *, path: Path, now: dt.datetime) -> dt.datetime:
        if value is not None:
            probe = {"type": "opt_out", "aam_uuid": "-", "datetime": value}
            try:  # the API's rules for a datetime (ISO 8601, UTC without a zone, not in the future)
                return validate_event(probe, now=now).datetime
            except InvalidField as invalid:
                raise CommandError(f"--datetime: {invalid.message}") from None
        modified = dt.datetime.fromtimestamp(path.stat().st_mtime, tz=dt.UTC).replace(microsecond=0)
        default = min(modified, now)
        self.stderr.write(f"Events without a datetime are dated {default.isoformat()} "
                          "(the file's modification time; --datetime sets another).")
        return default

    def _report(self, error: LineError) -> None:
        self.stderr.write(str(error))


class ProgressBar:
    """`[#####.....]  45%  450,000 lines` on one line of `stream`, redrawn at most every 0.2 s."""

    def __init__(self, stream: OutputWrapper, *, total: int, passes: int) -> None:
        self.stream, self.total = stream, max(total, 1)
        self.labels = ["checking", "loading"][-passes:]
        self.drawn_at = 0.0

    def __call__(self, position: int, lines: int) -> None:
        is_done = position >= self.total
        if not is_done and time.monotonic() - self.drawn_at < PROGRESS_INTERVAL_S:
            return
        self.drawn_at = time.monotonic()
        share = min(position / self.total, 1.0)
        filled = int(share * BAR_WIDTH)
        label = self.labels[0] if self.labels else "loading"
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self.stream.write(f"\r{label} [{bar}] {share:4.0%} {lines:,} lines", ending="\n" if is_done else "")
        self.stream.flush()
        if is_done and len(self.labels) > 1:
            self.labels.pop(0)


def _wake(destination_ids: set[int]) -> None:
    tasks.schedule_flushes(destination_ids)


def _count(events: int) -> None:
    count_events_ingested(events)
