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

from delivery.intake.importing import Defaults, import_events
from delivery.intake.membership import apply_events
from delivery.models import Membership
from destinations import services
from destinations.models import ChangeSource, Segment
from tests.delivery.intake.membership_events import NOW, qualify

pytestmark = [pytest.mark.postgresql_only, pytest.mark.django_db(transaction=True)]
SEGMENT = 7
BLOCKED_FOR_S = 0.5  # how long the ingest keeps its transaction open once the deletion has started


def ingest_through_the_api(tmp_path: Path) -> None:
    apply_events(events=[qualify(SEGMENT, when=NOW, uuid=f"{index:038d}") for index in range(20)], now=NOW)


def ingest_a_file(tmp_path: Path) -> None:
    path = tmp_path / "adobe.txt"
    path.write_text("".join(f"{index:038d} {SEGMENT}\n" for index in range(20)))
    import_events(path, defaults=Defaults(datetime=NOW, now=NOW), skip_invalid=False, on_error=pytest.fail)


def run_together(*targets: Callable[[], None]) -> None:
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)


@pytest.mark.parametrize("ingest", [ingest_through_the_api, ingest_a_file])
def test_deleting_a_segment_waits_for_an_ingest_writing_it_then_deletes_its_memberships(
    tmp_path: Path, ingest: Callable[[Path], None]
):
    Segment.objects.create(id=SEGMENT)
    written, deleting = threading.Event(), threading.Event()
    moments: dict[str, float] = {}
    errors: list[BaseException] = []

    def ingest_then_wait() -> None:
        try:
            with transaction.atomic():
                ingest(tmp_path)
                written.set()
                assert deleting.wait(10)
                time.sleep(BLOCKED_FOR_S)  # the deletion must wait for this commit
                moments["ingest committed"] = time.monotonic()
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)
        finally:
            connection.close()

    def delete() -> None:
        try:
            assert written.wait(10)
            deleting.set()
            services.delete_segments(segment_ids=[SEGMENT], actor=None, source=ChangeSource.API)
            moments["deleted"] = time.monotonic()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    run_together(ingest_then_wait, delete)

    assert errors == []
    assert moments["deleted"] > moments["ingest committed"]
    assert not Segment.objects.filter(id=SEGMENT).exists()
    assert not Membership.objects.filter(segment_id=SEGMENT).exists()


def test_an_ingest_after_a_deletion_starts_the_segment_again(tmp_path: Path):
    Segment.objects.create(id=SEGMENT, ttl_days=30)
    services.delete_segments(segment_ids=[SEGMENT], actor=None, source=ChangeSource.API)

    ingest_through_the_api(tmp_path)

    assert Segment.objects.get(id=SEGMENT).ttl_days == 120  # the default: a new segment
    assert Membership.objects.filter(segment_id=SEGMENT).count() == 20
    assert Membership.objects.filter(expires_at=NOW + dt.timedelta(days=120)).count() == 20
