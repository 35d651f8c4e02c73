"""delivery.lifecycle.erasure beside batch mode: it waits for a cut; exits owed to a batch turned off go."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection

from delivery.lifecycle.erasure import batch_cut_lock_key, erase_forgotten_devices
from delivery.models import BatchExit
from destinations.models import Destination
from tests.delivery.concurrency import held_in_another_transaction
from tests.delivery.lifecycle_events import apply, opt_out, qualify
from tests.delivery.pending_work import SPORTS, map_segments
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 2, 2, 9, 0, tzinfo=dt.UTC)
UUID = "19393572368547369350319949416899715727"


def later(**delta: float) -> dt.datetime:
    return T0 + dt.timedelta(**delta)


@pytest.mark.postgresql_only
@pytest.mark.django_db(transaction=True)
def test_the_erasure_waits_while_a_batch_is_being_cut(clock):
    # Given a device that opted out, and a batch destination whose batch is being cut by another process
    batch = DestinationFactory(realtime=False, batch_interval_hours=24, batch_cutoff_seq=0)
    map_segments(batch, SPORTS)
    apply(qualify(UUID, SPORTS, at=T0))
    apply(opt_out(UUID, at=later(seconds=1)))
    def cut() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [batch_cut_lock_key(batch.pk)])

    # When the erasure runs during the cut, then after it
    with held_in_another_transaction(cut):
        during = erase_forgotten_devices(now=later(seconds=2))
    after = erase_forgotten_devices(now=later(seconds=2))

    # Then it waited, then captured the device's exit for the next batch and erased it
    assert (during.erased, during.waiting) == (0, 1)
    assert after.erased == 1
    assert list(BatchExit.objects.values_list("aam_uuid", "segments")) == [
        (UUID, [[SPORTS, later(seconds=1).isoformat()]])]


def test_exits_owed_to_a_destination_whose_batch_mode_was_turned_off_are_dropped(clock):
    # Given an erased device whose exits wait for a batch destination's next batch
    batch = DestinationFactory(realtime=False, batch_interval_hours=24, batch_cutoff_seq=0)
    map_segments(batch, SPORTS)
    apply(qualify(UUID, SPORTS, at=T0))
    apply(opt_out(UUID, at=later(seconds=1)))
    erase_forgotten_devices(now=later(seconds=1))
    waiting = BatchExit.objects.count()

    # When its batch mode is turned off and the erasure runs again
    Destination.objects.filter(pk=batch.pk).update(batch_interval_hours=None)
    erase_forgotten_devices(now=later(seconds=2))

    # Then nothing of the device is kept for it
    assert (waiting, BatchExit.objects.count()) == (1, 0)
