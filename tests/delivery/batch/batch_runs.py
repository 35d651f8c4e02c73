"""Run a batch and read what it sent, for the batch-mode tests (the clock stands at T0)."""

from __future__ import annotations

import datetime as dt
import json

from django.utils import timezone

from delivery.batch.transfers import cut_batch, send_batch_deliveries
from delivery.models import Delivery
from delivery.sending.documents import format_aam_time
from destinations.models import Destination
from tests.delivery.lifecycle_events import documents, statuses
from tests.delivery.pending_work import OLD

T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
GAMES = OLD  # never mapped to the batch destination
DPID = 20914


def later(**delta: float) -> dt.datetime:
    return T0 + dt.timedelta(**delta)


def run_batch(destination: Destination) -> int:
    """Cut the batch now and send it; return the number of requests sent."""
    cut_batch(destination_id=destination.pk, now=timezone.now(), only_if_due=False)
    destination.refresh_from_db()
    return send_batch_deliveries(destination=destination)


def users_of(partner, start: int = 0) -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    return [user for document in documents(partner, start) for user in statuses(document)]


def stored_documents() -> list[dict]:
    """The stored deliveries' documents, in the order they were cut."""
    bodies = Delivery.objects.order_by("pk").values_list("body", flat=True)
    return [json.loads(bytes(body)) for body in bodies]


def when(moment: dt.datetime) -> str:
    return format_aam_time(moment)
