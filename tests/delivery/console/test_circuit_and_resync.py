"""The console's circuit badge, next probe and backlog, and its Resync button (CONTRACT §7)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from delivery.models import DestinationDevice, Device, Membership
from destinations.models import ChangeAction, CircuitState, ConfigChange
from tests.delivery.console.console_clients import FakeTask, messages_of
from tests.factories import DestinationFactory, MappingFactory, SegmentFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def resync_task(monkeypatch) -> FakeTask:
    task = FakeTask()
    monkeypatch.setattr("delivery.tasks.resync_destination", task)
    return task


def opened_destination(**fields):
    opened = timezone.now() - dt.timedelta(minutes=4)
    return DestinationFactory(circuit_state=CircuitState.OPEN, circuit_opened_at=opened,
                              circuit_next_probe_at=timezone.now() + dt.timedelta(seconds=50),
                              consecutive_failures=10, **fields)


def test_the_dashboard_shows_each_circuit_its_next_probe_and_the_backlog(viewer):
    # Given an open circuit with two pending devices, a probing one and a closed one
    failing = opened_destination(name="failing")
    DestinationFactory(name="probing", circuit_state=CircuitState.HALF_OPEN, circuit_opened_at=timezone.now())
    DestinationFactory(name="healthy")
    for uuid in ("a", "b"):
        Device.objects.create(aam_uuid=uuid, last_seen=timezone.now())
        DestinationDevice.objects.create(destination=failing, device_id=uuid,
                                         pending_since=timezone.now() - dt.timedelta(minutes=3))

    page = viewer.get("/dashboard/").content.decode()

    assert 'data-circuit="open"' in page
    assert f"circuit open since {failing.circuit_opened_at:%H:%M:%S} UTC (4 min)" in page
    assert "next probe in 4" in page or "next probe in 5" in page
    assert 'data-circuit="half_open"' in page and "circuit probing" in page
    assert 'data-circuit="closed"' in page
    assert "oldest waits 3 min" in page


def test_the_destination_page_shows_the_circuit_and_operators_get_the_resync_button(viewer, operator):
    destination = opened_destination()

    read = viewer.get(f"/dashboard/destinations/{destination.pk}/").content.decode()
    acted = operator.get(f"/dashboard/destinations/{destination.pk}/").content.decode()

    assert "circuit open since" in read and "circuit open since" in acted
    assert 'id="resync"' not in read
    assert 'id="resync"' in acted and "Resync</button>" in acted


def test_a_destination_without_a_circuit_breaker_says_so(viewer):
    destination = DestinationFactory(circuit_breaker=False)

    assert 'data-circuit="off"' in viewer.get(f"/dashboard/destinations/{destination.pk}/").content.decode()


def test_an_operator_resyncs_every_mapped_device_and_the_change_log_says_who(operator, resync_task):
    destination = DestinationFactory()
    MappingFactory(destination=destination, segment=SegmentFactory(id=7))
    device = Device.objects.create(aam_uuid="a", last_seen=timezone.now())
    Membership.objects.create(device=device, segment_id=7, is_active=True, datetime=timezone.now())

    response = operator.post(f"/dashboard/destinations/{destination.pk}/resync/", {"since": ""}, follow=True)

    assert messages_of(response) == ["Resync queued: 1 devices of active mappings."]
    assert [call[:2] for call in resync_task.calls] == [(destination.pk, None)]
    change = ConfigChange.objects.get(action=ChangeAction.RESYNC)
    assert (change.source, change.actor_id, change.changes) == ("console", operator.user.pk,
                                                                {"since": None, "devices": 1})


def test_a_resync_since_a_time_and_of_a_paused_destination_says_when_it_sends(operator, resync_task):
    destination = DestinationFactory(enabled=False)

    response = operator.post(f"/dashboard/destinations/{destination.pk}/resync/",
                             {"since": "2026-01-01T10:00"}, follow=True)

    assert messages_of(response) == [
        "Resync queued: 0 devices of failed deliveries since 2026-01-01 10:00 UTC; "
        "the destination is paused: they go out on the resume."]
    assert resync_task.calls[0][1] == "2026-01-01T10:00:00+00:00"


@pytest.mark.parametrize(("since", "said"), [("soon", "YYYY-MM-DD HH:MM"), ("2999-01-01T00:00", "future")])
def test_a_bad_or_future_since_is_refused_with_a_message(operator, resync_task, since, said):
    destination = DestinationFactory()

    url = f"/dashboard/destinations/{destination.pk}/resync/"
    response = operator.post(url, {"since": since}, follow=True)

    assert said in messages_of(response)[0]
    assert resync_task.calls == []


def test_viewers_may_not_resync(viewer, resync_task):
    destination = DestinationFactory()

    response = viewer.post(f"/dashboard/destinations/{destination.pk}/resync/")

    assert response.status_code == 403
    assert resync_task.calls == []


def test_an_open_circuit_is_not_shown_as_sending(viewer):
    # Given one destination whose circuit is open and one whose circuit is closed
    failing = opened_destination(name="failing")
    healthy = DestinationFactory(name="healthy")

    # When the viewer reads each destination's page
    pages = {
        d.name: viewer.get(f"/dashboard/destinations/{d.pk}/").content.decode() for d in (failing, healthy)
    }

    # Then only the closed one says it is sending; the open one says why it is not
    assert '<span class="badge ok">sending</span>' in pages["healthy"]
    assert '<span class="badge ok">sending</span>' not in pages["failing"]
    assert 'data-circuit="open"' in pages["failing"]
