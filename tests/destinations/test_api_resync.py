"""POST /api/v1/destinations/{id}/resync/, and the circuit and backlog fields (CONTRACT §5, §7)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

import delivery.tasks
from delivery.models import DeliveryStatus, DestinationDevice, Device, Membership
from destinations.models import ChangeAction, ChangeSource, CircuitState, ConfigChange
from tests.delivery.log_rows import TIMEOUT, log_delivery
from tests.destinations.payloads import payload
from tests.factories import DestinationFactory, MappingFactory, SegmentFactory

URL = "/api/v1/destinations/"
pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch) -> list[tuple]:
    """The resync tasks handed to the broker: (destination_id, since, started_at)."""
    sent: list[tuple] = []
    monkeypatch.setattr(delivery.tasks.resync_destination, "delay", lambda *args: sent.append(args))
    return sent


def member(uuid: str, segment_id: int) -> None:
    device, _ = Device.objects.get_or_create(aam_uuid=uuid, defaults={"last_seen": timezone.now()})
    SegmentFactory(id=segment_id)
    Membership.objects.create(device=device, segment_id=segment_id, is_active=True, datetime=timezone.now())


@pytest.fixture
def mapped():
    """A destination mapped to segment 1, with three members, and one device of an unmapped segment."""
    destination = DestinationFactory()
    MappingFactory(destination=destination, segment=SegmentFactory(id=1))
    for uuid in ("a", "b", "c"):
        member(uuid, 1)
    member("z", 2)
    return destination


def resync(client, destination, body=None):
    return client.post(f"{URL}{destination.pk}/resync/", body if body is not None else {}, format="json")


def test_a_resync_of_every_mapped_device_answers_202_with_the_count_and_queues_the_task(
    operator_client, mapped, queued
):
    response = resync(operator_client, mapped)

    assert response.status_code == 202, response.json()
    assert response.json() == {"devices": 3}
    [(destination_id, since, started_at)] = queued
    assert (destination_id, since) == (mapped.pk, None)
    assert dt.datetime.fromisoformat(started_at) <= timezone.now()
    change = ConfigChange.objects.get(action=ChangeAction.RESYNC)
    assert (change.actor_name, change.source) == ("operator", ChangeSource.API)
    assert change.destination_id == mapped.pk
    assert change.changes == {"since": None, "devices": 3}


def test_a_resync_since_a_time_counts_the_devices_of_the_failures_since_then(operator_client, mapped, queued):
    since = timezone.now() - dt.timedelta(hours=1)
    log_delivery(mapped, created_at=since + dt.timedelta(minutes=1), outcome=DeliveryStatus.FAILED,
                 tries=[TIMEOUT], aam_uuids=["a", "b"])
    log_delivery(mapped, created_at=since - dt.timedelta(minutes=1), outcome=DeliveryStatus.FAILED,
                 tries=[TIMEOUT], aam_uuids=["c"])

    response = resync(operator_client, mapped, {"since": since.isoformat()})

    assert response.status_code == 202, response.json()
    assert response.json() == {"devices": 2}
    assert queued[0][1] == since.isoformat()
    assert ConfigChange.objects.get(action=ChangeAction.RESYNC).changes == {
        "since": since.isoformat(), "devices": 2}


def test_a_since_without_a_zone_is_utc(operator_client, mapped, queued):
    response = resync(operator_client, mapped, {"since": "2026-01-01T10:00:00"})

    assert response.status_code == 202, response.json()
    assert dt.datetime.fromisoformat(queued[0][1]) == dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01T00:00:00Z", 12, ["2026-01-01"]])
def test_a_bad_since_is_a_400_naming_the_field(operator_client, mapped, queued, since):
    response = resync(operator_client, mapped, {"since": since})

    assert response.status_code == 400
    assert list(response.json()) == ["since"]
    assert (queued, ConfigChange.objects.filter(action=ChangeAction.RESYNC).exists()) == ([], False)


def test_a_since_in_the_future_is_a_400_naming_the_field(operator_client, mapped, queued):
    ahead = timezone.now() + dt.timedelta(minutes=5)
    response = resync(operator_client, mapped, {"since": ahead.isoformat()})

    assert response.status_code == 400
    assert response.json() == {"since": ["since must not be in the future."]}
    assert queued == []


def test_viewers_may_not_resync_and_an_unknown_destination_is_a_404(
    viewer_client, operator_client, mapped, queued
):
    assert resync(viewer_client, mapped).status_code == 403
    assert operator_client.post(f"{URL}999999/resync/", {}, format="json").status_code == 404
    assert queued == []


def test_a_paused_destination_accepts_a_resync(operator_client, mapped, queued):
    mapped.enabled = False
    mapped.save()

    response = resync(operator_client, mapped)

    assert (response.status_code, response.json()) == (202, {"devices": 3})
    assert len(queued) == 1


def test_a_destination_that_is_not_real_time_answers_409(operator_client, mapped, queued):
    mapped.realtime = False
    mapped.batch_interval_hours = 24
    mapped.save()

    response = resync(operator_client, mapped)

    assert response.status_code == 409
    assert "not real-time" in response.json()["detail"]
    assert queued == []


def test_with_the_broker_down_a_resync_answers_503_and_records_nothing(operator_client, mapped, monkeypatch):
    def broker_down(*args):
        raise KombuOperationalError("connection refused")

    monkeypatch.setattr(delivery.tasks.resync_destination, "delay", broker_down)

    response = resync(operator_client, mapped)

    assert response.status_code == 503
    assert not ConfigChange.objects.filter(action=ChangeAction.RESYNC).exists()


def test_the_destination_shows_its_circuit_and_backlog(viewer_client, mapped):
    # Given an open circuit and two pending devices
    opened = timezone.now() - dt.timedelta(minutes=3)
    type(mapped).objects.filter(pk=mapped.pk).update(
        circuit_state=CircuitState.OPEN, circuit_opened_at=opened,
        circuit_next_probe_at=opened + dt.timedelta(seconds=30), consecutive_failures=12)
    oldest = timezone.now() - dt.timedelta(minutes=2)
    DestinationDevice.objects.create(destination=mapped, device_id="a", pending_since=oldest)
    DestinationDevice.objects.create(destination=mapped, device_id="b", pending_since=timezone.now())
    DestinationDevice.objects.create(destination=mapped, device_id="c", pending_since=None)

    body = viewer_client.get(f"{URL}{mapped.pk}/").json()

    assert (body["circuit_state"], body["consecutive_failures"], body["pending_devices"]) == ("open", 12, 2)
    assert dt.datetime.fromisoformat(body["circuit_opened_at"].replace("Z", "+00:00")) == opened
    assert dt.datetime.fromisoformat(body["oldest_pending_at"].replace("Z", "+00:00")) == oldest
    assert (body["circuit_breaker"], body["circuit_failure_threshold"]) == (True, 10)


def test_the_list_reads_the_backlog_in_one_query_whatever_its_length(viewer_client, mapped):
    for _ in range(5):
        other = DestinationFactory()
        DestinationDevice.objects.create(destination=other, device_id="a", pending_since=timezone.now())

    with CaptureQueriesContext(connection) as queries:
        body = viewer_client.get(URL).json()

    assert len(body["results"]) == 6
    assert sorted(row["pending_devices"] for row in body["results"]) == [0, 1, 1, 1, 1, 1]
    destination_queries = [q for q in queries.captured_queries if "destinations_destination" in q["sql"]]
    assert len(destination_queries) <= 2  # the page and its count


def test_the_circuit_state_cannot_be_written_but_its_settings_can(operator_client, mapped):
    response = operator_client.patch(f"{URL}{mapped.pk}/", {
        "circuit_state": "open", "consecutive_failures": 99, "pending_devices": 5,
        "circuit_breaker": False, "circuit_failure_threshold": 3,
    }, format="json")

    assert response.status_code == 200, response.json()
    mapped.refresh_from_db()
    assert (mapped.circuit_state, mapped.consecutive_failures) == ("closed", 0)
    assert (mapped.circuit_breaker, mapped.circuit_failure_threshold) == (False, 3)
    assert response.json()["pending_devices"] == 0


def test_a_new_destination_answers_an_empty_backlog(operator_client, public_dns):
    response = operator_client.post(URL, payload(), format="json")

    assert response.status_code == 201, response.json()
    assert (response.json()["pending_devices"], response.json()["oldest_pending_at"]) == (0, None)
    assert response.json()["circuit_state"] == "closed"


def test_the_openapi_document_describes_resync_and_the_circuit_fields(viewer_client):
    schema = viewer_client.get("/api/schema/", {"format": "json"}).json()

    resync_operation = schema["paths"]["/api/v1/destinations/{id}/resync/"]["post"]
    assert set(resync_operation["responses"]) == {"202", "400", "409", "503"}
    destination = schema["components"]["schemas"]["Destination"]["properties"]
    for name in ("circuit_state", "circuit_opened_at", "circuit_next_probe_at", "consecutive_failures",
                 "pending_devices", "oldest_pending_at"):
        assert destination[name].get("readOnly") is True, name
    assert destination["circuit_failure_threshold"]["maximum"] == 1000
