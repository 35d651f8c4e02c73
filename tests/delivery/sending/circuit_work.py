"""Helpers for the circuit breaker's tests: a failing destination, its backlog, and what the partner got."""

from __future__ import annotations

import datetime as dt
import json

from delivery.models import DestinationDevice
from delivery.realtime.flush import send_due_requests
from destinations.models import ChangeAction, ConfigChange, Destination
from tests.delivery.pending_work import SPORTS, map_segments, pending_devices
from tests.factories import DestinationFactory
from tests.local_partner import Partner


def failing_destination(partner: Partner, **settings: object) -> Destination:
    """A real-time destination at `partner`, one device a request, mapped to SPORTS, sending at once."""
    values: dict[str, object] = {
        "url": partner.url, "max_wait_ms": 0, "max_users_per_request": 1, "max_retries": 0,
        "retry_delay_ms": 0, "circuit_failure_threshold": 3,
    }
    values.update(settings)
    destination = DestinationFactory(**values)
    map_segments(destination, SPORTS)
    return destination


def backlog(destination: Destination, count: int, *, since: dt.datetime, prefix: str = "dev") -> list[str]:
    """`count` devices pending in SPORTS, in order; return their AAM UUIDs."""
    rows = pending_devices(destination, count, pending_since=since, segment_id=SPORTS, prefix=prefix)
    return [row.device_id for row in rows]


def flush(destination: Destination) -> int:
    """What a flush does (claims of up to 25 requests until none is due); return the requests sent."""
    destination.refresh_from_db()
    return send_due_requests(destination=destination, max_requests=25)


def sent_devices(partner: Partner) -> list[tuple[str, list[tuple[str, str]]]]:
    """Every (AAM UUID, [(Segment_ID, Status)]) the partner received, in order of arrival."""
    return [
        (user["AAM_UUID"], [(s["Segment_ID"], s["Status"]) for s in user["Segments"]])
        for received in partner.requests
        if received.body
        for user in json.loads(received.body).get("Users", [])
    ]


def circuit_changes(destination: Destination) -> list[ConfigChange]:
    actions = [ChangeAction.CIRCUIT_OPENED, ChangeAction.CIRCUIT_CLOSED]
    return list(ConfigChange.objects.filter(destination=destination, action__in=actions).order_by("id"))


def pending_uuids(destination: Destination) -> set[str]:
    rows = DestinationDevice.objects.filter(destination=destination, pending_since__isnull=False)
    return set(rows.values_list("device_id", flat=True))
