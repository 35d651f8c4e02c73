"""The references the database no longer checks row by row (delivery migration 0009), kept by locks.

A membership names its device and its segment without a foreign-key constraint; ingestion holds the
segments it writes `FOR KEY SHARE` until it commits, and `destinations.services.delete_segments`
locks a segment `FOR UPDATE` before the cascade deletes its memberships. Were either lock missing, a
deletion racing an ingest would leave memberships of a segment that no longer exists.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.urls import reverse

from delivery.intake.importing import Defaults, import_events
from delivery.intake.membership import apply_events
from delivery.models import Membership
from destinations import services
from destinations.models import ChangeSource, ConfigChange, Segment
from tests.delivery.intake.membership_events import NOW, qualify

pytestmark = [pytest.mark.postgresql_only, pytest.mark.django_db(transaction=True)]
SEGMENT = 7
BLOCKED_FOR_S = 0.5  # how long the ingest keeps its transaction open once written: the deletion waits


def ingest_through_the_api(tmp_path: Path) -> None:
    apply_events(events=[qualify(SEGMENT, when=NOW, uuid=f"{index:038d}") for index in range(20)], now=NOW)


def ingest_a_file(tmp_path: Path) -> None:
    path = tmp_path / "adobe.txt"
    path.write_text("".join(f"{index:038d} {SEGMENT}\n" for index in range(20)))
    import_events(path, defaults=Defaults(datetime=NOW, now=NOW), skip_invalid=False, on_error=pytest.fail)


class HeldSegment:
    """An ingest of SEGMENT (20 devices) that keeps its transaction open `seconds` once written."""

    def __init__(self, tmp_path: Path, *, seconds: float,
                 ingest: Callable[[Path], None] = ingest_through_the_api) -> None:
        self.written = threading.Event()
        self.errors: list[BaseException] = []
        self.committed_at: float | None = None
        self.thread = threading.Thread(target=self._run, args=(tmp_path, seconds, ingest))

    def __enter__(self) -> HeldSegment:
        self.thread.start()
        assert self.written.wait(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.thread.join(timeout=30)
        assert self.errors == []

    def _run(self, tmp_path: Path, seconds: float, ingest: Callable[[Path], None]) -> None:
        try:
            with transaction.atomic():
                ingest(tmp_path)
                self.written.set()
                time.sleep(seconds)
            self.committed_at = time.monotonic()
        except BaseException as exc:  # reported by __exit__
            self.errors.append(exc)
        finally:
            connection.close()


@pytest.mark.parametrize("ingest", [ingest_through_the_api, ingest_a_file])
def test_deleting_a_segment_waits_for_an_ingest_writing_it_then_deletes_its_memberships(
    tmp_path: Path, ingest: Callable[[Path], None]
):
    Segment.objects.create(id=SEGMENT)

    with HeldSegment(tmp_path, seconds=BLOCKED_FOR_S, ingest=ingest) as held:
        services.delete_segments(segment_ids=[SEGMENT], actor=None, source=ChangeSource.API)
        deleted_at = time.monotonic()

    assert held.committed_at is not None
    assert deleted_at > held.committed_at
    assert not Segment.objects.filter(id=SEGMENT).exists()
    assert not Membership.objects.filter(segment_id=SEGMENT).exists()


def test_a_deletion_that_would_wait_long_gives_up_and_deletes_nothing(tmp_path: Path):
    Segment.objects.create(id=SEGMENT)

    busy = pytest.raises(services.SegmentBusy, match=f"Segment {SEGMENT} is being written")
    with HeldSegment(tmp_path, seconds=3), busy:
        services.delete_segments(segment_ids=[SEGMENT], actor=None, source=ChangeSource.API)

    assert Segment.objects.filter(id=SEGMENT).exists()
    assert Membership.objects.filter(segment_id=SEGMENT).count() == 20
    assert not ConfigChange.objects.exists()  # not recorded either


def test_the_api_answers_409_while_an_ingestion_holds_the_segment(tmp_path: Path, operator_client):
    Segment.objects.create(id=SEGMENT)

    with HeldSegment(tmp_path, seconds=3):
        response = operator_client.delete(f"/api/v1/segments/{SEGMENT}/")

    assert response.status_code == 409
    assert "being written by an ingestion in progress; nothing was deleted" in response.json()["detail"]
    assert operator_client.delete(f"/api/v1/segments/{SEGMENT}/").status_code == 204  # once it has committed
    assert not Membership.objects.filter(segment_id=SEGMENT).exists()


def test_the_admin_says_a_busy_segment_was_not_deleted_and_offers_no_bulk_delete(tmp_path, admin_client):
    Segment.objects.create(id=SEGMENT)
    url = reverse("admin:destinations_segment_delete", args=[SEGMENT])

    with HeldSegment(tmp_path, seconds=3):
        response = admin_client.post(url, {"post": "yes"}, follow=True)

    assert "being written by an ingestion in progress" in response.content.decode()
    assert "deleted successfully" not in response.content.decode()
    assert Segment.objects.filter(id=SEGMENT).exists()
    changelist = admin_client.get(reverse("admin:destinations_segment_changelist")).content.decode()
    assert "delete_selected" not in changelist


def test_a_deletion_yields_to_an_import_that_holds_one_segment_and_then_needs_another(tmp_path: Path):
    # The import holds segment 8 (its first chunk); the deletion locks 7, then waits for 8; the import's
    # next chunk needs 7. The deletion gives up before PostgreSQL's deadlock check would pick a victim.
    Segment.objects.create(id=SEGMENT)
    Segment.objects.create(id=SEGMENT + 1)
    deleting = threading.Event()
    errors: list[BaseException] = []

    def import_in_two_chunks() -> None:
        try:
            with transaction.atomic():
                apply_events(events=[qualify(SEGMENT + 1, when=NOW, uuid="a" * 38)], now=NOW)
                assert deleting.wait(10)
                time.sleep(0.3)  # the deletion holds segment 7 and waits for 8
                apply_events(events=[qualify(SEGMENT, when=NOW, uuid="b" * 38)], now=NOW)
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)
        finally:
            connection.close()

    importer = threading.Thread(target=import_in_two_chunks)
    importer.start()
    time.sleep(0.3)
    deleting.set()
    with pytest.raises(services.SegmentBusy):
        services.delete_segments(segment_ids=[SEGMENT, SEGMENT + 1], actor=None, source=ChangeSource.API)
    importer.join(timeout=30)

    assert errors == []
    assert Membership.objects.filter(segment_id__in=[SEGMENT, SEGMENT + 1]).count() == 2
    assert Segment.objects.filter(id__in=[SEGMENT, SEGMENT + 1]).count() == 2


def test_an_ingest_after_a_deletion_starts_the_segment_again(tmp_path: Path):
    Segment.objects.create(id=SEGMENT, ttl_days=30)
    services.delete_segments(segment_ids=[SEGMENT], actor=None, source=ChangeSource.API)

    ingest_through_the_api(tmp_path)

    assert Segment.objects.get(id=SEGMENT).ttl_days == 120  # the default: a new segment
    assert Membership.objects.filter(segment_id=SEGMENT).count() == 20
    assert Membership.objects.filter(expires_at=NOW + dt.timedelta(days=120)).count() == 20
