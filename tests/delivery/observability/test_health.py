"""GET /healthz: the database, the broker and the backlog, for monitoring probes (CONTRACT §5)."""

from __future__ import annotations

import datetime as dt
import socket
import time
from unittest import mock

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from delivery.models import DestinationDevice, Device
from tests.factories import DestinationFactory
from tests.ports import free_port


@pytest.fixture
def silent_broker():
    """A TCP port that accepts connections and never answers (a hung Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    listener.close()



@pytest.mark.django_db
def test_it_answers_200_without_authentication_when_everything_answers(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True and body["broker"]["ok"] is True
    assert body["oldest_pending_age_s"] is None
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]


@pytest.mark.django_db
def test_it_reports_the_age_of_the_oldest_pending_device(client):
    # Given
    destination = DestinationFactory()
    now = timezone.now()
    for aam_uuid, waited_s in (("1", 90), ("2", 5)):
        device = Device.objects.create(aam_uuid=aam_uuid, last_seen=now)
        DestinationDevice.objects.create(
            destination=destination, device=device, pending_since=now - dt.timedelta(seconds=waited_s)
        )
    DestinationDevice.objects.create(
        destination=destination, device=Device.objects.create(aam_uuid="3", last_seen=now), pending_since=None
    )

    # When
    body = client.get("/healthz").json()

    # Then
    assert 90 <= body["oldest_pending_age_s"] < 100


@pytest.mark.django_db
def test_a_broker_that_refuses_connections_makes_it_503(client, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["broker"] == {"ok": False, "error": "ConnectionError"}
    assert body["database"]["ok"] is True


@pytest.mark.django_db
def test_a_hung_broker_makes_it_503_within_the_probe_timeout(client, settings, silent_broker):
    settings.CELERY_BROKER_URL = silent_broker

    started = time.monotonic()
    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["broker"]["ok"] is False
    assert time.monotonic() - started < 3


@pytest.mark.django_db
def test_a_database_outage_makes_it_503_with_a_json_body(client):
    with mock.patch.object(connection, "cursor", side_effect=OperationalError("connection refused")):
        response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["database"] == {"ok": False, "error": "OperationalError"}
    assert body["broker"]["ok"] is True
    assert body["oldest_pending_age_s"] is None


@pytest.mark.django_db
def test_the_answer_never_shows_the_broker_url(client, settings):
    settings.CELERY_BROKER_URL = f"redis://:hunter2@127.0.0.1:{free_port()}/0"

    response = client.get("/healthz")

    assert "hunter2" not in response.content.decode()


def test_it_only_answers_reads(client):
    assert client.post("/healthz").status_code == 405
