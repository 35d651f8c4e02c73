"""Events and partner documents for the lifecycle, erasure and batch tests.

Events go through `delivery.intake.membership.apply_events`, as the API and the
ingest command apply them; real-time sends go through the sender's claim and
send, to a local HTTPS partner whose received documents are parsed here.
"""

from __future__ import annotations

import datetime as dt
import json

from django.utils import timezone

from delivery.intake.events import Event, EventType
from delivery.intake.membership import apply_events
from delivery.realtime.flush import send_due_requests
from destinations.models import Destination
from tests.local_partner import Partner


def qualify(uuid: str, segment_id: int, *, at: dt.datetime, regions=(), onboarded: bool = False) -> Event:
    return Event(type=EventType.QUALIFICATION, aam_uuid=uuid, datetime=at, segment_id=segment_id,
                 regions=tuple(regions), onboarded=onboarded)


def disqualify(uuid: str, segment_id: int, *, at: dt.datetime, onboarded: bool = False) -> Event:
    return Event(type=EventType.DISQUALIFICATION, aam_uuid=uuid, datetime=at, segment_id=segment_id,
                 onboarded=onboarded)


def id_sync(uuid: str, dpid: int, dpuuid: str, *, at: dt.datetime) -> Event:
    return Event(type=EventType.ID_SYNC, aam_uuid=uuid, datetime=at, dpid=dpid, dpuuid=dpuuid)


def opt_out(uuid: str, *, at: dt.datetime) -> Event:
    return Event(type=EventType.OPT_OUT, aam_uuid=uuid, datetime=at)


def apply(*events: Event) -> set[int]:
    """Apply the events now; return the destinations given real-time work."""
    return apply_events(events=list(events), now=timezone.now()).destination_ids


def send_realtime(destination: Destination) -> int:
    """Claim and send everything due for `destination` now (its `max_wait_ms` should be 0)."""
    destination.refresh_from_db()
    return send_due_requests(destination=destination, max_requests=100)


def documents(partner: Partner, start: int = 0) -> list[dict]:
    """The documents the partner received, parsed, from the `start`-th on."""
    return [json.loads(received.body) for received in partner.requests[start:]]


def statuses(document: dict) -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    """(AAM_UUID, DataPartner_UUID, [(Segment_ID, Status, DateTime)]) of each user object."""
    return [
        (user["AAM_UUID"], user["DataPartner_UUID"],
         [(segment["Segment_ID"], segment["Status"], segment["DateTime"]) for segment in user["Segments"]])
        for user in document["Users"]
    ]
