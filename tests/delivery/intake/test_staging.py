"""delivery.intake.staging: an Adobe file merged set-based obeys `apply_events`'s rules, case for case."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import pytest

from delivery.intake.importing import Defaults, import_events
from delivery.intake.lines import FileFormat, parse_line
from delivery.intake.membership import apply_events
from delivery.models import DestinationDevice, Device, Membership, MembershipChange
from tests.delivery.pending_work import map_segments
from tests.factories import DestinationFactory

pytestmark = [pytest.mark.django_db, pytest.mark.postgresql_only, pytest.mark.usefixtures("clock")]

AT = dt.datetime(2026, 5, 3, 12, 0, tzinfo=dt.UTC)  # the file's datetime
T0 = AT + dt.timedelta(days=1)  # the clock
SEGMENT = 12
# The stored membership before the file: none, or (is_active, datetime, qualified_at) around AT.
BEFORE, LATER = AT - dt.timedelta(hours=1), AT + dt.timedelta(hours=1)
STORED = [None] + [
    (is_active, at, qualified_at)
    for is_active, at in itertools.product([True, False], [BEFORE, AT, LATER])
    for qualified_at in ([at - dt.timedelta(days=1)] if is_active else [None, at - dt.timedelta(days=1)])
]
# What the file says of the segment: the columns of one line or two (a line may not add and remove it).
COLUMNS = [("12",), (" 12",), ("12", "12"), (" 12", " 12"), ("12", " 12"), (" 12", "12")]


def store(aam_uuid: str, stored: tuple[bool, dt.datetime, dt.datetime | None] | None) -> None:
    Device.objects.create(aam_uuid=aam_uuid, last_seen=BEFORE)
    if stored is not None:
        is_active, at, qualified_at = stored
        Membership.objects.create(device_id=aam_uuid, segment_id=SEGMENT, is_active=is_active, datetime=at,
                                  qualified_at=qualified_at, expires_at=LATER if is_active else None)


def lines_of(aam_uuid: str, columns: tuple[str, ...]) -> list[str]:
    return [f"{aam_uuid} {line}" for line in columns]


def outcome(aam_uuid: str) -> tuple[object, list[tuple[object, ...]], set[int]]:
    membership = Membership.objects.filter(device_id=aam_uuid).values_list(
        "is_active", "datetime", "qualified_at", "expires_at").first()
    changes = list(MembershipChange.objects.filter(aam_uuid=aam_uuid).order_by("id").values_list(
        "segment_id", "is_active", "datetime", "is_onboarded"))
    pending = set(DestinationDevice.objects.filter(device_id=aam_uuid, pending_since__isnull=False)
                  .values_list("destination_id", flat=True))
    return membership, changes, pending


@pytest.mark.parametrize("onboarded", [False, True])
def test_every_stored_state_and_file_line_merge_as_apply_events_merges_them(tmp_path: Path, onboarded: bool):
    # Given a segment with a TTL, a real-time destination mapping it, and pairs of devices in the same state
    [mapping] = map_segments(DestinationFactory(), SEGMENT)
    mapping.segment.ttl_days = 30
    mapping.segment.save()
    defaults = Defaults(datetime=AT, onboarded=onboarded, now=T0)
    cases = list(itertools.product(range(len(STORED)), range(len(COLUMNS))))
    file_lines, portable_lines = [], []
    for stored, columns in cases:
        store(f"staged-{stored}-{columns}", STORED[stored])
        store(f"python-{stored}-{columns}", STORED[stored])
        file_lines += lines_of(f"staged-{stored}-{columns}", COLUMNS[columns])
        portable_lines += lines_of(f"python-{stored}-{columns}", COLUMNS[columns])
    path = tmp_path / "adobe.txt"
    path.write_text("\n".join(file_lines) + "\n")

    # When the file goes through the staging table, and the same lines through apply_events
    result = import_events(path, defaults=defaults, skip_invalid=False, on_error=pytest.fail)
    events = [event for line in portable_lines
              for event in parse_line(line.encode(), file_format=FileFormat.ADOBE, defaults=defaults)]
    applied = apply_events(events=events, now=defaults.now)

    # Then both give the same memberships, changes (in the same order) and pending marks
    assert (result.events, result.changes) == (applied.events, applied.changes)
    for stored, columns in cases:
        staged, python = outcome(f"staged-{stored}-{columns}"), outcome(f"python-{stored}-{columns}")
        assert staged == python, (STORED[stored], COLUMNS[columns])


def test_a_line_that_is_not_simple_is_still_staged_exactly(tmp_path: Path):
    # An AAM UUID with a backslash and non-ASCII letters, a 19-digit segment ID and duplicates
    path = tmp_path / "adobe.txt"
    path.write_text("dév\\ice 9223372036854775807,12,12 13\n")

    result = import_events(path, defaults=Defaults(datetime=AT, now=AT), skip_invalid=False,
                           on_error=pytest.fail)

    assert (result.events, result.changes) == (3, 2)
    assert sorted(Membership.objects.values_list("device_id", "segment_id", "is_active")) == [
        ("dév\\ice", 12, True), ("dév\\ice", 13, False), ("dév\\ice", 9223372036854775807, True)]
