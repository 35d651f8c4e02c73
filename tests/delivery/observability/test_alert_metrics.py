"""GET /metrics: `aamdest_alerts_total{event}` and the alert sends by channel and status (CONTRACT §7)."""

from __future__ import annotations

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from delivery.alert_models import Alert, AlertEvent, AlertSend
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db


def _alert_samples(client) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
        if sample.name.startswith("aamdest_alert")
    }


def test_alerts_are_counted_by_event_and_their_sends_by_channel_and_status(client):
    # Given two opened alerts (one a reminder), one closed, none stale; sends in three states
    destination = DestinationFactory()
    now = timezone.now()
    opened, _, closed = (
        Alert.objects.create(event=event, destination=destination, at=now, detail="", is_reminder=reminder)
        for event, reminder in ((AlertEvent.CIRCUIT_OPENED, False), (AlertEvent.CIRCUIT_OPENED, True),
                                (AlertEvent.CIRCUIT_CLOSED, False))
    )
    AlertSend.objects.create(alert=opened, channel="webhook", status="sent")
    AlertSend.objects.create(alert=opened, channel="email", status="failed")
    AlertSend.objects.create(alert=closed, channel="webhook", status="pending", next_try_at=now)

    samples = _alert_samples(client)

    assert samples[("aamdest_alerts_total", frozenset({("event", "circuit_opened")}))] == 2
    assert samples[("aamdest_alerts_total", frozenset({("event", "circuit_closed")}))] == 1
    assert samples[("aamdest_alerts_total", frozenset({("event", "backlog_stale")}))] == 0
    sends = {labels: value for (name, labels), value in samples.items() if name == "aamdest_alert_sends"}
    assert sends[frozenset({("channel", "webhook"), ("status", "sent")})] == 1
    assert sends[frozenset({("channel", "webhook"), ("status", "pending")})] == 1
    assert sends[frozenset({("channel", "email"), ("status", "failed")})] == 1
    assert sends[frozenset({("channel", "email"), ("status", "sent")})] == 0
    assert len(sends) == 6
