"""Fixtures of the alerts' tests: alert settings pointing at a local HTTPS receiver, circuit transitions."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from destinations.models import ChangeAction, ChangeSource, CircuitState, ConfigChange, Destination
from tests.factories import DestinationFactory
from tests.local_partner import Partner

SIGNING_KEY = "alert-signing-key-for-tests"
EMAILS = ["ops@example.com", "oncall@example.com"]


@pytest.fixture
def receiver(partner: Partner, settings) -> Partner:
    """The alert webhook at a local HTTPS server, signed with SIGNING_KEY; mail to EMAILS (locmem)."""
    settings.AAMDEST_ALERT_WEBHOOK_URL = partner.url
    settings.AAMDEST_ALERT_SIGNING_KEY = SIGNING_KEY
    settings.AAMDEST_ALERT_EMAILS = EMAILS
    settings.AAMDEST_ALERT_BACKLOG_AGE_S = 600
    settings.AAMDEST_ALERT_REMIND_HOURS = 6
    return partner


@pytest.fixture
def quiet_channels(settings) -> None:
    """No channel configured: alerts are only recorded."""
    settings.AAMDEST_ALERT_WEBHOOK_URL = None
    settings.AAMDEST_ALERT_EMAILS = []


@pytest.fixture
def failing_destination(db) -> Destination:
    return DestinationFactory(name="acme")


def transition(destination: Destination, action: str, *, at: dt.datetime | None = None,
               source: str = ChangeSource.SYSTEM, actor_name: str = "aamdest",
               detail: str = "10 consecutive failed attempts (threshold 10); last error: HTTP 503"
               ) -> ConfigChange:
    """Write a circuit transition as the breaker does: the state, and its change-log row."""
    opened = action == ChangeAction.CIRCUIT_OPENED
    old, new = (CircuitState.CLOSED, CircuitState.OPEN)
    if not opened:
        old, new = new, old
    at = at or timezone.now()
    Destination.objects.filter(pk=destination.pk).update(circuit_state=new,
                                                         circuit_opened_at=at if opened else None)
    return ConfigChange.objects.create(
        created_at=at, actor_name=actor_name, source=source, action=action, object_type="destination",
        object_id=str(destination.pk), object_repr=destination.name, destination=destination,
        changes={"circuit_state": {"old": old, "new": new}, "detail": detail},
    )
