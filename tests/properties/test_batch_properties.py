"""Batches (CONTRACT §2, batch mode) for any interleaving of ingestion and cut-offs.

Every membership change (a `MembershipChange` row) is in exactly one batch: the
first cut after its ingestion; no batch carries a change made after its
cut-off; a batch carries each changed (device, segment) once, in the state of
its latest change before the cut-off, each device once; and the last batch that
carried a (device, segment) agrees with the merge model (`merge_model`).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

import pytest
from django.db.models import Max
from django.utils import timezone
from hypothesis import given, note
from hypothesis import strategies as st

from delivery.batch.transfers import cut_batch
from delivery.intake.events import Event, EventType
from delivery.intake.membership import apply_events
from delivery.models import Delivery, DeliveryKind, MembershipChange
from delivery.sending.documents import format_aam_time
from destinations.models import Destination
from tests.delivery.pending_work import map_segments
from tests.factories import DestinationFactory
from tests.properties.isolation import rolled_back
from tests.properties.merge_model import expected_statuses, short, winners
from tests.properties.profiles import scaled

# A failing property shrinks its example against the database: give it time to report the smallest.
pytestmark = [pytest.mark.django_db, pytest.mark.timeout(900)]

DEVICES = ("device-a", "device-b", "device-c")
DPID = 20914  # the destination's user_dpid; 20915 is another namespace, never sent
SEGMENTS = (201, 202)
BASE = timezone.now().replace(microsecond=0) - dt.timedelta(hours=1)
CUT = "cut"

events = st.builds(
    lambda kind, uuid, segment, minute, onboarded: Event(
        type=kind, aam_uuid=uuid, segment_id=segment, datetime=BASE + dt.timedelta(minutes=minute),
        onboarded=onboarded),
    st.sampled_from((EventType.QUALIFICATION, EventType.DISQUALIFICATION)), st.sampled_from(DEVICES),
    st.sampled_from(SEGMENTS), st.integers(0, 2), st.booleans(),
) | st.builds(
    lambda uuid, dpid, dpuuid: Event(type=EventType.ID_SYNC, aam_uuid=uuid, datetime=BASE, dpid=dpid,
                                     dpuuid=dpuuid),
    st.sampled_from(DEVICES), st.sampled_from((DPID, DPID + 1)), st.sampled_from(("p1", "p2")),
)


class Ingest(tuple):
    """One ingestion request's events, shown short in hypothesis' reports."""

    def __repr__(self) -> str:
        return "[" + ", ".join(short(event, base_minute=BASE.minute) for event in self) + "]"


# A step is one ingestion request or a cut-off.
steps = st.lists(st.one_of(st.just(CUT), st.lists(events, min_size=1, max_size=4).map(Ingest)),
                 min_size=1, max_size=8)


@dataclass
class Batch:
    """One cut: the changes ingested since the previous cut, its cut-off and what it carried."""

    made: list[int] = field(default_factory=list)  # MembershipChange ids ingested before it
    cutoff: int = 0
    carried: list[dict] = field(default_factory=list)  # user objects of its documents
    partner_ids: dict[str, set[str]] = field(default_factory=dict)  # synced in DPID by its cut-off


def last_change_id() -> int:
    return MembershipChange.objects.aggregate(last=Max("id"))["last"] or 0


def cut(destination: Destination, batch: Batch) -> None:
    first_new = (Delivery.objects.aggregate(last=Max("id"))["last"] or 0) + 1
    batch.cutoff = cut_batch(destination_id=destination.pk, now=timezone.now(), only_if_due=False).cutoff_seq
    for delivery in Delivery.objects.filter(pk__gte=first_new, kind=DeliveryKind.BATCH).order_by("pk"):
        batch.carried.extend(json.loads(bytes(delivery.body))["Users"])


def run(destination: Destination, plan: list) -> list[Batch]:
    """Ingest and cut as `plan` says, then a last cut; return every batch, the first (empty) one first.

    The first cut comes before any ingestion: a destination's first batch carries
    active memberships in full, not changes, and is not what this property is about.
    """
    first = Batch()
    cut(destination, first)
    batches, current = [first], Batch()
    synced: dict[str, set[str]] = {}
    for step in [*plan, CUT]:
        if step == CUT:
            current.partner_ids = {uuid: set(ids) for uuid, ids in synced.items()}
            cut(destination, current)
            batches.append(current)
            current = Batch()
            continue
        before = last_change_id()
        apply_events(events=list(step), now=timezone.now())
        for event in step:
            if event.type is EventType.ID_SYNC and event.dpid == DPID:
                synced.setdefault(event.aam_uuid, set()).add(event.dpuuid)
        current.made.extend(MembershipChange.objects.filter(id__gt=before).values_list("id", flat=True))
    return batches


def latest_in_window(after: int, until: int) -> dict[tuple[str, str], tuple[str, str]]:
    """(device, Segment_ID) → (Status, DateTime) of its latest change in (after, until]."""
    latest = {}
    for change in MembershipChange.objects.filter(id__gt=after, id__lte=until).order_by("id"):
        latest[(change.aam_uuid, str(change.segment_id))] = (
            "1" if change.is_active else "0", format_aam_time(change.datetime))
    return latest


def carried_pairs(batch: Batch) -> dict[tuple[str, str], tuple[str, str]]:
    return {(user["AAM_UUID"], segment["Segment_ID"]): (segment["Status"], segment["DateTime"])
            for user in batch.carried for segment in user["Segments"]}


def assert_each_device_once_per_partner_id(batch: Batch) -> None:
    """Each device once per partner ID synced in the destination's namespace ("" when none), same segments."""
    copies: dict[str, list[dict]] = {}
    for user in batch.carried:
        copies.setdefault(user["AAM_UUID"], []).append(user)
    for uuid, users in copies.items():
        partner_uuids = [user["DataPartner_UUID"] for user in users]
        assert sorted(partner_uuids) == sorted(batch.partner_ids.get(uuid) or [""])
        assert all(user["Segments"] == users[0]["Segments"] for user in users)


@pytest.fixture
def destination() -> Destination:
    destination = DestinationFactory(realtime=False, batch_interval_hours=24)
    map_segments(destination, *SEGMENTS)
    return destination


@scaled(20)
@given(plan=steps)
def test_every_change_is_in_exactly_one_batch_and_none_after_its_cutoff(destination, plan):
    with rolled_back():
        # given any interleaving of ingestion requests and cut-offs
        batches = run(destination, plan)

        # then each change is in the window of the first cut after its ingestion, and only there
        after = batches[0].cutoff
        for batch in batches[1:]:
            assert all(after < change_id <= batch.cutoff for change_id in batch.made)
            # and the batch carries each changed pair once, as its latest change up to the cut-off
            assert carried_pairs(batch) == latest_in_window(after, batch.cutoff)
            one_copy_each = {user["AAM_UUID"]: user for user in batch.carried}.values()
            assert len(carried_pairs(batch)) == sum(len(user["Segments"]) for user in one_copy_each)
            assert_each_device_once_per_partner_id(batch)
            after = batch.cutoff
        assert after == last_change_id()

        # and what the batches carried last follows the merge model
        last = {}
        for batch in batches:
            last.update({pair: status for pair, (status, _) in carried_pairs(batch).items()})
        note(f"batches carried {[len(carried_pairs(batch)) for batch in batches]} pairs")
        all_events = [event for step in plan if step != CUT for event in step]
        assert last == {(uuid, str(segment)): status
                        for (uuid, segment), status in expected_statuses(all_events).items()}


@scaled(20)
@given(plan=st.lists(st.lists(events, min_size=1, max_size=4).map(Ingest), max_size=4))
def test_the_first_batch_carries_every_active_membership_at_its_cutoff(destination, plan):
    with rolled_back():
        # given any ingestion before a destination's first batch
        for step in plan:
            apply_events(events=list(step), now=timezone.now())

        # when its first batch is cut
        first = Batch()
        cut(destination, first)

        # then it carries every active membership, as "1" at its latest qualification, and no exit
        all_events = [event for step in plan for event in step]
        assert carried_pairs(first) == {
            (uuid, str(segment)): ("1", format_aam_time(winner.datetime))
            for (uuid, segment), winner in winners(all_events).items()
            if winner.type is EventType.QUALIFICATION
        }
