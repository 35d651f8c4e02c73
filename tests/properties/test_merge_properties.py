"""Merge rules (CONTRACT §2, §4.2) for any events of one device, in any order and any split.

Per segment the event with the latest `datetime` wins, a disqualification
winning a tie. What is stored follows that whatever the order of arrival and
however the events are split across ingestion requests, with claims and sends
to a local partner in between. With real-time events only, what the partner
holds last for each segment is the same whatever the order too: "1" when the
segment is active, "0" when the device was in it (some qualification) and left,
nothing when the device was never in it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import pytest
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from delivery.intake.events import Event, EventType
from delivery.intake.membership import apply_events
from delivery.models import Membership
from delivery.realtime.flush import send_due_requests
from destinations.models import Destination
from tests.delivery.pending_work import map_segments
from tests.factories import DestinationFactory
from tests.local_partner import Partner
from tests.properties.isolation import rolled_back
from tests.properties.merge_model import expected_statuses, short, winners
from tests.properties.profiles import PROPERTY_SETTINGS

# A failing property shrinks its example against the database: give it time to report the smallest.
pytestmark = [pytest.mark.django_db, pytest.mark.timeout(900)]

UUID = "merge-property-device"
SEGMENTS = (101, 102, 103)
# Few distinct datetimes, so that ties and equal-time arrivals happen often.
BASE = timezone.now().replace(microsecond=0) - dt.timedelta(hours=1)
MINUTES = (0, 1, 2)
Q, D = EventType.QUALIFICATION, EventType.DISQUALIFICATION


@dataclass(frozen=True)
class Request:
    """One ingestion request, then (`then_send`) a claim and send of whatever is due."""

    events: tuple[Event, ...]
    then_send: bool

    def __repr__(self) -> str:
        shown = ", ".join(short(event, base_minute=BASE.minute) for event in self.events)
        return f"[{shown}]{' + send' if self.then_send else ''}"


def event_strategy(*, onboarded: st.SearchStrategy[bool]) -> st.SearchStrategy[Event]:
    return st.builds(
        lambda kind, segment, minute, is_onboarded: Event(
            type=kind, aam_uuid=UUID, segment_id=segment, datetime=BASE + dt.timedelta(minutes=minute),
            onboarded=is_onboarded),
        st.sampled_from((Q, D)), st.sampled_from(SEGMENTS), st.sampled_from(MINUTES), onboarded,
    )


@st.composite
def arrivals(draw: st.DrawFn, *, onboarded: st.SearchStrategy[bool]) -> list[Request]:
    """Events in some order of arrival, split into requests, some followed by a send."""
    events = draw(st.lists(event_strategy(onboarded=onboarded), min_size=1, max_size=6))
    events = draw(st.permutations(events))
    requests, current = [], []
    for event in events:
        current.append(event)
        if draw(st.booleans()):
            requests.append(Request(tuple(current), then_send=draw(st.booleans())))
            current = []
    if current:
        requests.append(Request(tuple(current), then_send=False))
    return requests


# ---- running it --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A real-time destination and the local partner behind it (a short repr for hypothesis' reports)."""

    destination: Destination
    partner: Partner

    def __repr__(self) -> str:
        return "Target(...)"


@pytest.fixture
def target(partner: Partner) -> Target:
    destination = DestinationFactory(url=partner.url, max_wait_ms=0, max_retries=0, timeout_ms=3000)
    map_segments(destination, *SEGMENTS)
    return Target(destination, partner)


def ingest_and_send(destination: Destination, requests: list[Request]) -> None:
    for request in requests:
        apply_events(events=list(request.events), now=timezone.now())
        if request.then_send:
            send_due_requests(destination=destination, max_requests=10)
    send_due_requests(destination=destination, max_requests=10)


def stored_memberships() -> dict[int, tuple[bool, dt.datetime]]:
    rows = Membership.objects.filter(device_id=UUID).values_list("segment_id", "is_active", "datetime")
    return {segment_id: (is_active, moment) for segment_id, is_active, moment in rows}


def partner_statuses(partner: Partner, *, since: int) -> dict[str, str]:
    """Segment_ID → the Status of the last document that listed it for the device."""
    last: dict[str, str] = {}
    for received in partner.requests[since:]:
        for user in json.loads(received.body)["Users"]:
            if user["AAM_UUID"] == UUID:
                last.update({segment["Segment_ID"]: segment["Status"] for segment in user["Segments"]})
    return last


@PROPERTY_SETTINGS
@given(requests=arrivals(onboarded=st.booleans()))
def test_the_stored_memberships_follow_latest_wins_whatever_the_order_and_split(target, requests):
    # given events of one device (onboarded or not) arriving in any order and any split
    events = [event for request in requests for event in request.events]
    with rolled_back():
        # when they are ingested, with claims and sends in between
        ingest_and_send(target.destination, requests)

        # then each segment holds its latest event, a disqualification winning a tie
        expected = {segment_id: (winner.type is Q, winner.datetime)
                    for (_, segment_id), winner in winners(events).items()}
        assert stored_memberships() == expected


@PROPERTY_SETTINGS
@given(requests=arrivals(onboarded=st.just(False)))
def test_what_the_partner_holds_last_is_the_same_whatever_the_order_and_split(target, requests):
    # given real-time events of one device arriving in any order and any split
    events = [event for request in requests for event in request.events]
    since = len(target.partner.requests)
    with rolled_back():
        # when they are ingested, with claims and sends in between
        ingest_and_send(target.destination, requests)

        # then the partner holds "1" for the active segments, "0" for those left, nothing for the others
        expected = {str(segment_id): status for (_, segment_id), status in expected_statuses(events).items()}
        assert partner_statuses(target.partner, since=since) == expected
