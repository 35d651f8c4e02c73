"""GET /readyz (migrations applied), beat's last tick in /healthz and /metrics, a RabbitMQ broker."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from delivery.coordination import BEAT_TICK_KEY, scheduling_client
from delivery.observability.heartbeat import record_beat_tick
from tests.ports import free_port

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture
def no_beat_tick():
    scheduling_client().delete(BEAT_TICK_KEY)
    yield
    scheduling_client().delete(BEAT_TICK_KEY)



@pytest.mark.django_db
def test_it_is_ready_when_every_migration_is_applied(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["migrations"] == {"ok": True, "unapplied": []}
    assert body["database"]["ok"] and body["broker"]["ok"]


@pytest.mark.django_db
def test_it_is_not_ready_while_a_migration_is_unapplied_and_names_it(client):
    # Given a database that lacks the newest migration of destinations (as before `migrate`)
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(name) FROM django_migrations WHERE app = 'destinations'")
        newest = cursor.fetchone()[0]
        cursor.execute("DELETE FROM django_migrations WHERE app = 'destinations' AND name = %s", [newest])

    # When
    response = client.get("/readyz")

    # Then
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["migrations"]["ok"] is False
    assert f"destinations.{newest}" in body["migrations"]["unapplied"]
    assert client.get("/healthz").status_code == 200  # liveness does not care


@pytest.mark.django_db
def test_healthz_shows_the_age_of_beats_last_tick(client, no_beat_tick):
    assert client.get("/healthz").json()["beat_last_tick_age_s"] is None

    record_beat_tick(at=time.time() - 5)

    assert 5 <= client.get("/healthz").json()["beat_last_tick_age_s"] < 7


@pytest.mark.django_db
def test_metrics_show_when_beat_last_ticked(client, no_beat_tick):
    assert "aamdest_beat_last_tick_timestamp_seconds" not in client.get("/metrics").content.decode()

    record_beat_tick(at=1_800_000_000.5)

    page = client.get("/metrics").content.decode()
    assert "aamdest_beat_last_tick_timestamp_seconds 1.8000000005e+09" in page


@pytest.mark.django_db
def test_a_rabbitmq_broker_is_probed_over_amqp(client, settings):
    settings.CELERY_BROKER_URL = RABBITMQ_URL

    body = client.get("/healthz").json()

    assert body["broker"]["ok"] is True
    assert body["redis"]["ok"] is True  # the coordination Redis is probed on its own


@pytest.mark.django_db
def test_a_rabbitmq_that_does_not_answer_makes_it_503_quickly(client, settings):
    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{free_port()}//"

    started = time.monotonic()
    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["broker"]["ok"] is False
    assert "guest" not in response.content.decode()
    assert time.monotonic() - started < 4
