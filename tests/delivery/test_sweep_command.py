"""`manage.py sweep` and the scheduler's lifecycle entries (CONTRACT §6)."""

from __future__ import annotations

import datetime as dt
import io

import pytest
import time_machine
from django.core.management import call_command

import delivery.tasks
from aamdest.celery import app
from delivery.models import Device, Membership
from delivery.sending.documents import format_aam_time
from destinations.models import Segment
from tests.delivery.lifecycle_events import apply, documents, id_sync, qualify, send_realtime, statuses
from tests.delivery.pending_work import NEWS, SPORTS, map_segments
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 6, 1, 6, 0, tzinfo=dt.UTC)


def sweep() -> str:
    out = io.StringIO()
    call_command("sweep", stdout=out)
    return out.getvalue()


def test_the_sweep_expires_leaves_inactive_devices_and_wakes_their_destinations(partner, clock, woken):
    # Given a 30-day membership of a device seen since, and a never-expiring one of a device idle since
    destination = DestinationFactory(url=partner.url, max_wait_ms=0)
    map_segments(destination, SPORTS, NEWS)
    Segment.objects.filter(pk=NEWS).update(ttl_days=30)
    Segment.objects.filter(pk=SPORTS).update(ttl_days=0)
    apply(qualify("short", NEWS, at=T0), qualify("idle", SPORTS, at=T0),
          id_sync("idle", 20914, "gaid", at=T0))
    send_realtime(destination)
    apply(id_sync("short", 20914, "seen-again", at=T0 + dt.timedelta(days=100)))
    clock.move_to(T0 + dt.timedelta(days=120))

    # When the sweep runs, the 0s go out, and it runs again
    first = sweep()
    send_realtime(destination)
    second = sweep()

    # Then both left their segments, the partner got the "0"s, and the idle device was forgotten
    assert "Expired 1 membership(s). 1 device(s) inactive for 120 days left 1 segment(s)." in first
    assert woken[0] == {destination.pk}
    zero_news = ("short", "seen-again", [(str(NEWS), "0", format_aam_time(T0 + dt.timedelta(days=30)))])
    zero_sports = ("idle", "gaid", [(str(SPORTS), "0", format_aam_time(T0 + dt.timedelta(days=120)))])
    assert sorted(statuses(documents(partner)[-1])) == sorted([zero_news, zero_sports])
    assert "Expired 0 membership(s). 0 device(s)" in second
    assert "Erased 1 device(s)" in second
    assert list(Device.objects.values_list("aam_uuid", flat=True)) == ["short"]


def test_a_second_sweep_sends_nothing_twice(partner, clock, woken):
    destination = DestinationFactory(url=partner.url, max_wait_ms=0)
    map_segments(destination, SPORTS)
    apply(qualify("dev", SPORTS, at=T0))
    send_realtime(destination)
    clock.move_to(T0 + dt.timedelta(days=121))

    sweep()
    send_realtime(destination)
    sweep()
    sent_again = send_realtime(destination)

    assert sent_again == 0
    assert len(partner.requests) == 2
    assert not Membership.objects.filter(is_active=True).exists()


def test_the_sweep_task_wakes_the_destinations_given_zeros(clock, woken):
    destination = DestinationFactory(max_wait_ms=0)
    map_segments(destination, SPORTS)
    apply(qualify("dev", SPORTS, at=T0))

    with time_machine.travel(T0 + dt.timedelta(days=121), tick=False):
        delivery.tasks.sweep()

    assert woken == [{destination.pk}]


def test_the_scheduler_runs_the_sweep_the_erasures_the_batches_and_the_pruning():
    schedule = {entry["task"]: entry["schedule"] for entry in app.conf.beat_schedule.values()}

    assert schedule["delivery.tasks.sweep"] == 60.0
    assert schedule["delivery.tasks.erase_devices"] <= 10.0
    assert schedule["delivery.tasks.start_due_batches"] == 60.0
    assert schedule["delivery.tasks.prune_deliveries"] <= 3600.0
    for task in schedule:
        assert task in app.tasks
