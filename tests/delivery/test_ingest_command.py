"""`manage.py ingest` (CONTRACT §6): formats, invalid lines and exit status, defaults, idempotent imports."""

from __future__ import annotations

import datetime as dt
import io
import os
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from delivery.batch.transfers import cut_batch, send_batch_deliveries
from delivery.models import DestinationDevice, Device, Membership, MembershipChange
from tests.delivery.lifecycle_events import documents, send_realtime
from tests.delivery.pending_work import NEWS, SPORTS, map_segments
from tests.factories import DestinationFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clock")]

T0 = NOW = dt.datetime(2026, 5, 4, 10, 0, tzinfo=dt.UTC)  # the clock stands at T0


def write(tmp_path: Path, text: str, *, modified: dt.datetime = NOW - dt.timedelta(hours=1)) -> Path:
    path = tmp_path / "segments.txt"
    path.write_text(text)
    os.utime(path, (modified.timestamp(), modified.timestamp()))
    return path


def ingest(path: Path, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("ingest", str(path), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_invalid_lines_are_reported_by_number_nothing_is_stored_and_the_status_is_1(tmp_path, woken):
    path = write(tmp_path, "dev-1 12\ndev-2 x\n\ndev-3 13 13\n")
    err = io.StringIO()

    with pytest.raises(CommandError) as failed:
        call_command("ingest", str(path), stdout=io.StringIO(), stderr=err)

    assert failed.value.returncode == 1
    assert "2 invalid line(s); nothing was stored" in str(failed.value)
    assert "line 2: segments:" in err.getvalue()
    assert "line 4: removed_segments: Segment 13 is both added and removed." in err.getvalue()
    assert not Device.objects.exists()


def test_skip_invalid_stores_the_valid_lines_and_still_exits_with_1(tmp_path, woken):
    path = write(tmp_path, "dev-1 12\ndev-2 x\n")
    err = io.StringIO()

    with pytest.raises(CommandError) as failed:
        call_command("ingest", str(path), "--skip-invalid", stdout=io.StringIO(), stderr=err)

    assert (failed.value.returncode, "skipped" in str(failed.value)) == (1, True)
    assert "line 2: segments:" in err.getvalue()
    assert list(Device.objects.values_list("aam_uuid", flat=True)) == ["dev-1"]


def test_events_without_a_datetime_take_the_files_modification_time_or_datetime(tmp_path, woken):
    path = write(tmp_path, "dev-1 12\n", modified=dt.datetime(2026, 5, 1, 8, 30, 15, 500, tzinfo=dt.UTC))

    out, err = ingest(path)
    ingest(write(tmp_path, "dev-2 12\n"), "--datetime", "2026-05-02T07:00:00")

    assert "Ingested 1 events from 1 lines (1 membership changes)." in out
    assert "dated 2026-05-01T08:30:15+00:00 (the file's modification time" in err
    dated = dict(Membership.objects.values_list("device_id", "datetime"))
    assert dated == {"dev-1": dt.datetime(2026, 5, 1, 8, 30, 15, tzinfo=dt.UTC),
                     "dev-2": dt.datetime(2026, 5, 2, 7, 0, tzinfo=dt.UTC)}


def test_a_datetime_in_the_future_is_refused(tmp_path, woken):
    with pytest.raises(CommandError, match="--datetime: datetime is more than 5 minutes in the future"):
        ingest(write(tmp_path, "dev-1 12\n"), "--datetime", "2026-05-04T10:06:00Z")


def test_importing_the_same_file_twice_sends_partners_nothing_new(partner, tmp_path, woken):
    # Given a partner in real time and batch mode, and a file imported once and sent
    destination = DestinationFactory(url=partner.url, max_wait_ms=0, batch_interval_hours=24)
    map_segments(destination, SPORTS, NEWS)
    path = write(tmp_path, f"dev-1 {SPORTS},{NEWS}\ndev-2 {SPORTS} {NEWS}\n")
    ingest(path)
    send_realtime(destination)
    cut_batch(destination_id=destination.pk, now=NOW, only_if_due=False)
    send_batch_deliveries(destination=destination)
    sent, changes = len(partner.requests), MembershipChange.objects.count()

    # When the same file is imported again, and real time and the next batch run
    ingest(path)
    realtime_again = send_realtime(destination)
    cut = cut_batch(destination_id=destination.pk, now=NOW + dt.timedelta(days=1), only_if_due=False)

    # Then nothing changed and nothing more was sent
    assert (sent, woken[0]) == (2, {destination.pk})
    assert (realtime_again, cut.deliveries, len(partner.requests)) == (0, 0, sent)
    assert MembershipChange.objects.count() == changes


def test_onboarded_lines_never_start_a_real_time_send(partner, tmp_path, woken):
    destination = DestinationFactory(url=partner.url, max_wait_ms=0)
    map_segments(destination, SPORTS)

    ingest(write(tmp_path, f"dev-1 {SPORTS}\n"), "--onboarded")

    assert woken == [set()]
    assert not DestinationDevice.objects.exists()
    assert MembershipChange.objects.get().is_onboarded is True
    assert documents(partner) == []


def test_progress_goes_to_stderr_only_when_asked_or_on_a_terminal(tmp_path, woken):
    path = write(tmp_path, "".join(f"dev-{n} 12\n" for n in range(1500)))

    _, quiet = ingest(path)
    _, shown = ingest(path, "--progress")

    assert "checking [" not in quiet and "loading [" not in quiet
    assert "checking [" in shown and "loading [" in shown
    assert "100% 1,500 lines" in shown


def test_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        ingest(tmp_path / "missing.txt")
