"""Resync through each door (API, admin, console): one service, one change-log entry naming the door."""

from __future__ import annotations

import pytest
from django.utils import timezone

import delivery.tasks
from delivery.models import Device, Membership
from destinations.models import ChangeAction, ConfigChange
from tests.destinations import test_service_doors as doors
from tests.destinations.test_service_doors import Door, _select
from tests.factories import DestinationFactory, MappingFactory, SegmentFactory

pytestmark = pytest.mark.django_db
door = doors.door  # the fixture: one run per door


@pytest.fixture
def queued(monkeypatch) -> list[tuple]:
    sent: list[tuple] = []
    monkeypatch.setattr(delivery.tasks.resync_destination, "delay", lambda *args: sent.append(args))
    return sent


def test_a_resync_is_queued_and_recorded_alike_through_every_door(door: Door, queued):
    destination = DestinationFactory()
    MappingFactory(destination=destination, segment=SegmentFactory(id=5))
    device = Device.objects.create(aam_uuid="a", last_seen=timezone.now())
    Membership.objects.create(device=device, segment_id=5, is_active=True, datetime=timezone.now())

    response = door.post(api=f"destinations/{destination.pk}/resync/", admin=_select(destination, "resync"),
                         console=f"{destination.pk}/resync/")

    assert [args[:2] for args in queued] == [(destination.pk, None)]
    [(level, _text)] = door.said(response)
    assert level in {"202", "success"}
    [entry] = ConfigChange.objects.filter(action=ChangeAction.RESYNC)
    assert (entry.source, entry.actor_name, entry.changes) == (door.source, door.username,
                                                               {"since": None, "devices": 1})


def test_a_destination_that_is_not_real_time_is_refused_alike_through_every_door(door: Door, queued):
    destination = DestinationFactory(realtime=False, batch_interval_hours=24)

    response = door.post(api=f"destinations/{destination.pk}/resync/", admin=_select(destination, "resync"),
                         console=f"{destination.pk}/resync/")

    [(level, text)] = door.said(response)
    assert level in {"409", "error"} and "is not real-time" in text
    assert (queued, ConfigChange.objects.filter(action=ChangeAction.RESYNC).exists()) == ([], False)
