"""delivery.intake.importing: NDJSON and Adobe's batch line format, line numbers, chunks, defaults."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import pytest

from delivery.intake.events import Event, EventType, InvalidField
from delivery.intake.importing import (
    Defaults,
    FileFormat,
    LineError,
    detect_format,
    import_events,
    parse_line,
)
from delivery.models import Device, Membership, MembershipChange, PartnerId

AT = dt.datetime(2026, 4, 1, 12, 0, tzinfo=dt.UTC)
NOW = AT + dt.timedelta(hours=1)
DEFAULTS = Defaults(datetime=AT, now=NOW)


def adobe(line: str, defaults: Defaults = DEFAULTS) -> list[tuple[str, str, int | None]]:
    events = parse_line(line.encode(), file_format=FileFormat.ADOBE, defaults=defaults)
    return [(event.type.value, event.aam_uuid, event.segment_id) for event in events]


def refused(line: str, file_format: FileFormat = FileFormat.ADOBE) -> tuple[str, str]:
    with pytest.raises(InvalidField) as caught:
        parse_line(line.encode(), file_format=file_format, defaults=DEFAULTS)
    return caught.value.field, caught.value.message


# ---- the formats -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("dev 12,13 14", [("qualification", "dev", 12), ("qualification", "dev", 13),
                          ("disqualification", "dev", 14)]),
        ("dev 12", [("qualification", "dev", 12)]),
        ("dev  12", [("disqualification", "dev", 12)]),  # an empty column: nothing added
        ("dev 12 ", [("qualification", "dev", 12)]),  # an empty third column
        ("dev  ", []),
        ("dev 12,12", [("qualification", "dev", 12)]),
    ],
)
def test_an_adobe_line_adds_its_first_column_and_removes_its_second(line, expected):
    assert adobe(line) == expected


def test_adobe_events_take_the_default_datetime_and_the_onboarded_flag():
    onboarded = Defaults(AT, onboarded=True, now=NOW)

    [event] = parse_line(b"dev 12", file_format=FileFormat.ADOBE, defaults=onboarded)

    assert event == Event(type=EventType.QUALIFICATION, aam_uuid="dev", datetime=AT, onboarded=True,
                          segment_id=12)


@pytest.mark.parametrize(
    ("line", "field", "says"),
    [
        ("dev", "line", "found 1 column"),
        ("dev 1 2 3", "line", "found 4 column"),
        ("dev\t12", "line", "found 1 column"),
        ("dev 12,,13", "segments", "an empty item"),
        ("dev 12,x", "segments", "'x'"),
        ("dev -12", "segments", "'-12'"),
        ("dev 0", "segment_id", "positive integer"),
        ("dev 99999999999999999999", "segment_id", "positive integer"),
        ("dev 12 12", "removed_segments", "both added and removed"),
        ("a/b 12", "aam_uuid", "'/'"),
        ("a/b  ", "aam_uuid", "'/'"),
    ],
)
def test_an_invalid_adobe_line_says_which_field_and_why(line, field, says):
    found_field, message = refused(line)

    assert found_field == field
    assert says in message


def test_an_ndjson_line_is_validated_like_the_api_and_defaults_its_datetime():
    line = b'{"type": "qualification", "aam_uuid": "dev", "segment_id": 12, "regions": [9]}'
    dated = b'{"type": "opt_out", "aam_uuid": "dev", "datetime": "2026-03-01T00:00:00Z"}'

    [event] = parse_line(line, file_format=FileFormat.NDJSON, defaults=Defaults(AT, onboarded=True, now=NOW))
    [opt_out] = parse_line(dated, file_format=FileFormat.NDJSON, defaults=DEFAULTS)

    assert (event.datetime, event.onboarded, event.regions) == (AT, True, (9,))
    assert opt_out.datetime == dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    assert refused('{"type": "qualification", "aam_uuid": "dev"}', FileFormat.NDJSON) == (
        "segment_id", "This field is required.")
    assert refused("{not json", FileFormat.NDJSON)[0] == "event"


def test_the_format_is_told_by_the_first_line():
    assert detect_format(b'  {"type": "opt_out"}') is FileFormat.NDJSON
    assert detect_format(b"dev 12,13") is FileFormat.ADOBE


def test_a_line_that_is_not_utf8_is_invalid():
    with pytest.raises(InvalidField) as caught:
        parse_line(b"d\xffv 12", file_format=FileFormat.ADOBE, defaults=DEFAULTS)

    assert (caught.value.field, caught.value.message) == ("line", "This line is not valid UTF-8.")


# ---- importing files ---------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "events.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run(path: Path, **options) -> tuple[object, list[LineError]]:
    errors: list[LineError] = []
    options.setdefault("skip_invalid", False)
    result = import_events(path, defaults=DEFAULTS, on_error=errors.append, **options)
    return result, errors


@pytest.mark.django_db
def test_an_invalid_line_is_reported_by_number_and_nothing_is_stored(tmp_path):
    path = write(tmp_path, "dev-1 12\n\ndev-2 12,x\ndev-3 13\ndev-4\n")

    result, errors = run(path)

    assert [(error.line, error.field) for error in errors] == [(3, "segments"), (5, "line")]
    assert (result.invalid, result.stored) == (2, False)
    assert not Device.objects.exists()


@pytest.mark.django_db
def test_with_skip_invalid_the_valid_lines_are_stored(tmp_path):
    path = write(tmp_path, "dev-1 12\ndev-2 12,x\ndev-3 13\n")

    result, errors = run(path, skip_invalid=True)

    assert [str(error) for error in errors] == [
        "line 2: segments: Segment IDs are comma-separated positive integers; found 'x'."]
    assert (result.lines, result.invalid, result.events, result.stored) == (3, 1, 2, True)
    assert sorted(Device.objects.values_list("aam_uuid", flat=True)) == ["dev-1", "dev-3"]


@pytest.mark.django_db
def test_events_are_applied_in_chunks_and_merged_across_them(tmp_path):
    # Given a device qualified in one chunk and disqualified in the next, and an id sync
    lines = [f"dev-{n} 12" for n in range(5)] + ["dev-0  12"]
    path = write(tmp_path, "\n".join(lines) + "\n")
    woken: list[set[int]] = []

    # When imported 2 events at a time
    result, _ = run(path, chunk_events=2, on_chunk=woken.append)

    # Then every chunk was applied, and dev-0 left the segment
    assert (result.events, len(woken)) == (6, 3)
    assert list(Membership.objects.filter(is_active=False).values_list("device_id", flat=True)) == ["dev-0"]


@pytest.mark.django_db
def test_an_ndjson_file_with_every_event_type_is_imported(tmp_path):
    path = write(tmp_path, "\n".join([
        '{"type": "id_sync", "aam_uuid": "dev", "dpid": 20914, "dpuuid": "gaid-1"}',
        '{"type": "qualification", "aam_uuid": "dev", "segment_id": 12}',
        '{"type": "disqualification", "aam_uuid": "dev", "segment_id": 12,'
        ' "datetime": "2026-04-01T12:30:00"}',
    ]))

    result, errors = run(path)

    assert (result.events, errors) == (3, [])
    assert PartnerId.objects.get().dpuuid == "gaid-1"
    assert list(MembershipChange.objects.values_list("is_active", "datetime")) == [
        (True, AT), (False, AT + dt.timedelta(minutes=30))]


@pytest.mark.django_db
def test_a_gzip_file_is_read_and_its_progress_reaches_its_size(tmp_path):
    path = tmp_path / "events.gz"
    path.write_bytes(gzip.compress(b"".join(f"dev-{n} 12\n".encode() for n in range(2500))))
    seen: list[tuple[int, int]] = []

    result, _ = run(path, skip_invalid=True, progress=lambda position, lines: seen.append((position, lines)))

    assert result.events == 2500
    assert seen[-1] == (path.stat().st_size, 2500)
    assert [lines for _, lines in seen[:-1]] == [1000, 2000]
