"""Batch mode (SPEC §2): cut-offs, first batches, changes, schedules, failures, erased devices."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
import time_machine
from django.db import connection, transaction
from django.utils import timezone

import delivery.tasks
from delivery.batch import transfers
from delivery.batch.reading import read_portable, read_postgresql
from delivery.batch.transfers import (
    cut_batch,
    find_due_batch_destination_ids,
    find_unsent_batch_destination_ids,
    read_safe_cutoff,
    send_batch_deliveries,
)
from delivery.lifecycle.erasure import erase_forgotten_devices
from delivery.models import BatchExit, Delivery, DeliveryDevice, MembershipChange
from delivery.sending.documents import format_aam_time
from destinations.models import Destination, Mapping
from tests.delivery.lifecycle_events import (
    apply,
    disqualify,
    documents,
    id_sync,
    opt_out,
    qualify,
    send_realtime,
    statuses,
)
from tests.delivery.pending_work import map_segments
from tests.factories import DestinationFactory
from tests.local_partner import Reply

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
SPORTS, NEWS, GAMES = 14356, 12176, 10329
DPID = 20914


@pytest.fixture
def clock():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
def destination(partner, clock):
    destination = DestinationFactory(url=partner.url, realtime=False, batch_interval_hours=24,
                                     max_users_per_request=3, max_wait_ms=0)
    map_segments(destination, SPORTS, NEWS)
    return destination


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


# ---- what a batch carries ----------------------------------------------------------------


def test_the_first_batch_carries_every_active_membership_of_the_mapped_segments(partner, destination):
    # Given devices in and out of the mapped segments, onboarded data and partner IDs among them
    apply(id_sync("a", DPID, "a-1", at=T0), id_sync("a", DPID, "a-2", at=T0),
          id_sync("a", 99, "other", at=T0),
          qualify("a", SPORTS, at=T0, regions=[9, 6]), qualify("a", NEWS, at=later(seconds=1)),
          qualify("b", SPORTS, at=T0, onboarded=True),
          qualify("c", SPORTS, at=T0), disqualify("c", SPORTS, at=later(seconds=2)),
          qualify("d", GAMES, at=T0))

    # When the first batch runs
    sent = run_batch(destination)

    # Then every active membership went, one user object per partner ID, at most 3 a request
    assert sent == 1
    [first] = documents(partner)
    assert statuses(first) == [
        ("a", "a-1", [(str(NEWS), "1", when(later(seconds=1))), (str(SPORTS), "1", when(T0))]),
        ("a", "a-2", [(str(NEWS), "1", when(later(seconds=1))), (str(SPORTS), "1", when(T0))]),
        ("b", "", [(str(SPORTS), "1", when(T0))]),
    ]
    assert (first["User_count"], first["Users"][0]["AAM_Regions"]) == ("3", ["6", "9"])
    assert list(Delivery.objects.values_list("kind", "status", "user_count")) == [("batch", "delivered", 3)]


def test_the_first_batch_splits_requests_without_splitting_devices(partner, destination):
    # Given a device with two partner IDs, after two devices without
    apply(qualify("a", SPORTS, at=T0), qualify("b", SPORTS, at=T0),
          id_sync("c", DPID, "c-1", at=T0), id_sync("c", DPID, "c-2", at=T0), qualify("c", SPORTS, at=T0))

    # When the batch runs (3 user objects a request)
    run_batch(destination)

    # Then c's two user objects travel together in the second request
    stored = stored_documents()
    assert sorted(document["User_count"] for document in documents(partner)) == ["2", "2"]
    assert [[(user[0], user[1]) for user in statuses(document)] for document in stored] == [
        [("a", ""), ("b", "")],
        [("c", "c-1"), ("c", "c-2")],
    ]
    rows = DeliveryDevice.objects.order_by("delivery_id", "aam_uuid").values_list("aam_uuid", flat=True)
    assert list(rows) == ["a", "b", "c"]


def test_a_later_batch_carries_each_changed_membership_once_in_its_latest_state(partner, destination, clock):
    # Given a first batch
    apply(id_sync("a", DPID, "a-1", at=T0), qualify("a", SPORTS, at=T0), qualify("a", NEWS, at=T0),
          qualify("b", SPORTS, at=T0), qualify("quiet", SPORTS, at=T0))
    run_batch(destination)
    before = len(partner.requests)

    # When, a day later, a leaves NEWS, b enters then leaves NEWS, c arrives onboarded, GAMES (unmapped) moves
    clock.move_to(later(days=1))
    apply(disqualify("a", NEWS, at=later(hours=20)))
    apply(qualify("b", NEWS, at=later(hours=21)))
    apply(disqualify("b", NEWS, at=later(hours=22)))
    apply(qualify("c", SPORTS, at=later(hours=23), onboarded=True), qualify("a", GAMES, at=later(hours=23)))
    run_batch(destination)

    # Then each changed (device, segment) goes once, latest state, devices in the order of their last change
    assert users_of(partner, before) == [
        ("a", "a-1", [(str(NEWS), "0", when(later(hours=20)))]),
        ("b", "", [(str(NEWS), "0", when(later(hours=22)))]),
        ("c", "", [(str(SPORTS), "1", when(later(hours=23)))]),
    ]


def test_a_refresh_within_the_batch_carries_the_new_datetime(partner, destination, clock):
    apply(qualify("a", SPORTS, at=T0))
    run_batch(destination)
    clock.move_to(later(days=1))
    apply(qualify("a", SPORTS, at=later(hours=12)))

    run_batch(destination)

    assert users_of(partner, 1) == [("a", "", [(str(SPORTS), "1", when(later(hours=12)))])]


def test_a_batch_with_nothing_changed_sends_nothing_and_moves_the_schedule(partner, destination, clock):
    # Given a first batch
    apply(qualify("a", SPORTS, at=T0))
    run_batch(destination)

    # When the next one finds nothing new
    clock.move_to(later(days=1))
    sent = run_batch(destination)

    # Then nothing is sent, and the next is due a day later
    destination.refresh_from_db()
    assert (sent, len(partner.requests)) == (0, 1)
    assert destination.last_batch_at == later(days=1)
    assert find_due_batch_destination_ids(now=later(days=2) - dt.timedelta(seconds=1)) == set()
    assert find_due_batch_destination_ids(now=later(days=2)) == {destination.pk}


def test_the_cutoff_moves_on_when_requests_fail(partner, destination, clock):
    # Given a batch the partner refuses (500, then 500 on the retry)
    partner.script = [Reply(status=500)]
    apply(qualify("a", SPORTS, at=T0))
    run_batch(destination)

    # When the next batch runs after the partner recovered
    partner.script = [Reply()]
    clock.move_to(later(days=1))
    apply(qualify("b", SPORTS, at=later(hours=1)))
    run_batch(destination)

    # Then the failed request stays failed (redeliverable) and the new batch carries only b
    failed, delivered = Delivery.objects.order_by("pk")
    assert (failed.status, failed.kind, delivered.status) == ("failed", "batch", "delivered")
    assert [user[0] for user in users_of(partner, 2)] == ["b"]
    assert failed.attempts.count() == 2


def test_a_newly_mapped_segment_is_carried_in_full_by_the_next_batch(partner, destination, clock):
    # Given a first batch, then GAMES mapped, with members from before and a change of SPORTS
    apply(qualify("a", SPORTS, at=T0), qualify("a", GAMES, at=T0), qualify("b", GAMES, at=T0),
          qualify("gone", GAMES, at=T0), disqualify("gone", GAMES, at=later(seconds=1)))
    run_batch(destination)
    clock.move_to(later(days=1))
    map_segments(destination, GAMES, start_date=later(days=1).date())
    apply(qualify("c", SPORTS, at=later(hours=2)))

    # When the next batch runs
    run_batch(destination)

    # Then it carries SPORTS's change, and every active GAMES membership, each device once
    assert users_of(partner, 1) == [
        ("c", "", [(str(SPORTS), "1", when(later(hours=2)))]),
        ("a", "", [(str(GAMES), "1", when(T0))]),
        ("b", "", [(str(GAMES), "1", when(T0))]),
    ]


def test_a_mapping_that_missed_a_batch_is_carried_in_full_when_it_starts_again(partner, destination, clock):
    # Given NEWS's mapping ended before the second batch and restarted before the third
    apply(qualify("a", NEWS, at=T0))
    run_batch(destination)
    mapping = Mapping.objects.get(destination=destination, segment_id=NEWS)
    Mapping.objects.filter(pk=mapping.pk).update(end_date=T0.date())
    clock.move_to(later(days=1))
    run_batch(destination)
    Mapping.objects.filter(pk=mapping.pk).update(end_date=None)
    clock.move_to(later(days=2))

    # When the third batch runs
    run_batch(destination)

    # Then it carries NEWS's active members again
    assert users_of(partner, 1) == [("a", "", [(str(NEWS), "1", when(T0))])]


def test_onboarded_data_goes_only_in_batches_when_real_time_is_on_too(partner, destination, clock):
    # Given a destination in both modes
    Destination.objects.filter(pk=destination.pk).update(realtime=True)
    apply(qualify("live", SPORTS, at=T0), qualify("file", SPORTS, at=T0, onboarded=True))

    # When real time and the batch both run
    send_realtime(destination)
    realtime = users_of(partner)
    run_batch(destination)

    # Then the onboarded device went only in the batch
    assert [user[0] for user in realtime] == ["live"]
    assert [user[0] for user in users_of(partner, 1)] == ["file", "live"]  # a first batch: by AAM UUID


def test_a_paused_destination_cuts_no_batch_and_catches_up_after_resuming(partner, destination, clock):
    apply(qualify("a", SPORTS, at=T0))
    Destination.objects.filter(pk=destination.pk).update(enabled=False)

    paused = cut_batch(destination_id=destination.pk, now=T0, only_if_due=False)
    Destination.objects.filter(pk=destination.pk).update(enabled=True)
    run_batch(destination)

    assert paused.skipped == "paused"
    assert [user[0] for user in users_of(partner)] == ["a"]


# ---- erased devices ------------------------------------------------------------------------


def test_an_erased_devices_exits_go_in_the_next_batch_then_leave_the_stored_document(
    partner, destination, clock
):
    # Given a device sent in a batch, then opted out and erased before the next batch
    apply(id_sync("a", DPID, "a-1", at=T0), qualify("a", SPORTS, at=T0, regions=[7]),
          qualify("b", SPORTS, at=T0))
    run_batch(destination)
    clock.move_to(later(hours=1))
    apply(opt_out("a", at=later(hours=1)))
    erased = erase_forgotten_devices(now=later(hours=1))

    # When the next batch runs, then the erasure again
    clock.move_to(later(days=1))
    run_batch(destination)
    erase_forgotten_devices(now=later(days=1))

    # Then the partner got a's "0" under its partner ID, and no stored document holds a any more
    assert erased.erased == 1
    [document] = documents(partner, 1)
    assert statuses(document) == [("a", "a-1", [(str(SPORTS), "0", when(later(hours=1)))])]
    assert document["Users"][0]["AAM_Regions"] == ["7"]
    assert not BatchExit.objects.exists()
    assert not DeliveryDevice.objects.filter(aam_uuid="a").exists()
    assert [[user["AAM_UUID"] for user in body["Users"]] for body in stored_documents()] == [["b"], []]


# ---- schedule and tasks ---------------------------------------------------------------------


def test_batches_fall_due_on_their_interval_for_enabled_batch_destinations(destination, clock):
    # Given a batch destination, a paused one and a real-time-only one, none batched yet
    paused = DestinationFactory(batch_interval_hours=48, enabled=False)
    DestinationFactory(batch_interval_hours=None)

    # When a batch runs at T0
    first_due = find_due_batch_destination_ids(now=T0)
    cut_batch(destination_id=destination.pk, now=T0, only_if_due=True)
    again = cut_batch(destination_id=destination.pk, now=later(hours=23), only_if_due=True)

    # Then only the enabled batch destination was due, and is again 24 hours later
    assert first_due == {destination.pk}
    assert again.skipped == "not due"
    assert find_due_batch_destination_ids(now=later(hours=24)) == {destination.pk}
    assert paused.pk not in find_due_batch_destination_ids(now=later(days=9))


def test_send_batch_now_cuts_and_sends_whatever_the_schedule(partner, destination, clock):
    # Given a batch sent an hour ago, and a change since
    apply(qualify("a", SPORTS, at=T0))
    run_batch(destination)
    clock.move_to(later(hours=1))
    apply(qualify("b", SPORTS, at=later(hours=1)))

    # When the operator sends the batch now (the task the API and console queue)
    delivery.tasks.send_batch_now(destination.pk)

    # Then b went out at once, and nothing is left unsent
    assert [user[0] for user in users_of(partner, 1)] == ["b"]
    assert find_unsent_batch_destination_ids() == set()


def test_stored_batch_deliveries_wait_for_a_paused_destination(partner, destination, clock):
    # Given a batch cut, then the destination paused before it was sent
    apply(qualify("a", SPORTS, at=T0))
    cut_batch(destination_id=destination.pk, now=T0, only_if_due=False)
    Destination.objects.filter(pk=destination.pk).update(enabled=False)
    destination.refresh_from_db()

    # When the drain runs while paused, then after resuming
    while_paused = send_batch_deliveries(destination=destination)
    unsent_while_paused = find_unsent_batch_destination_ids()
    Destination.objects.filter(pk=destination.pk).update(enabled=True)
    delivery.tasks.send_stored_batch(destination.pk)

    # Then it went out only after
    assert (while_paused, unsent_while_paused) == (0, set())
    assert [user[0] for user in users_of(partner)] == ["a"]


def test_a_drain_that_loses_its_slot_stops_after_its_round(partner, destination, clock, monkeypatch):
    # Given a batch of two requests, sent one a round
    monkeypatch.setattr(transfers, "MAX_ROUND_REQUESTS", 1)
    apply(*(qualify(device, SPORTS, at=T0) for device in ("a", "b", "c", "d")))
    cut_batch(destination_id=destination.pk, now=T0, only_if_due=False)
    destination.refresh_from_db()

    # When the drain's slot is lost after its first round
    sent = send_batch_deliveries(destination=destination, keep_slot=lambda: False)

    # Then the other request waits, unleased, for the next drain
    assert (sent, len(partner.requests)) == (1, 1)
    assert find_unsent_batch_destination_ids() == {destination.pk}


# ---- reading -------------------------------------------------------------------------------


def test_both_readers_yield_the_same_devices(destination, clock):
    # Given changes after a cut-off, in covered segments, and members of a newly mapped one
    apply(id_sync("a", DPID, "a-1", at=T0), qualify("a", SPORTS, at=T0), qualify("z", GAMES, at=T0),
          qualify("m", GAMES, at=T0))
    after = MembershipChange.objects.order_by("id").last().id
    apply(qualify("b", NEWS, at=later(seconds=1)), qualify("m", SPORTS, at=later(seconds=2)),
          qualify("a", NEWS, at=later(seconds=3)), disqualify("a", SPORTS, at=later(seconds=3)))
    query = {"after": after, "until": read_safe_cutoff(), "changed_segments": [SPORTS, NEWS],
             "full_segments": [GAMES], "dpid": DPID}

    # When both read
    fast = list(read_postgresql(**query, chunk_size=2))
    portable = list(read_portable(**query, chunk_size=2))

    # Then they agree: changed devices by latest change (with their new segment's members), then the rest
    assert fast == portable
    assert [(device.aam_uuid, [(e.segment_id, e.is_active) for e in device.entries], device.partner_uuids)
            for device in fast] == [
        ("b", [(NEWS, True)], []),
        ("m", [(GAMES, True), (SPORTS, True)], []),
        ("a", [(NEWS, True), (SPORTS, False)], ["a-1"]),
        ("z", [(GAMES, True)], []),
    ]


@pytest.mark.django_db(transaction=True)
def test_the_cutoff_waits_for_ingestions_still_writing_changes(clock):
    # Given an ingestion whose change is written but not committed
    apply(qualify("a", SPORTS, at=T0))
    written, commit = threading.Event(), threading.Event()

    def ingest() -> None:
        with transaction.atomic():
            apply(qualify("b", SPORTS, at=T0))
            written.set()
            commit.wait(10)
        connection.close()

    ingestion = threading.Thread(target=ingest)
    ingestion.start()
    written.wait(10)
    cutoffs: list[int] = []
    reader = threading.Thread(target=lambda: (cutoffs.append(read_safe_cutoff()), connection.close()))

    # When the cut-off is read meanwhile
    reader.start()
    reader.join(0.5)
    waited = reader.is_alive()
    commit.set()
    ingestion.join()
    reader.join(10)

    # Then it waited for the commit and includes that change
    assert waited
    assert cutoffs == [MembershipChange.objects.order_by("id").last().id]


def test_the_scheduler_starts_due_batches_and_sends_stored_ones_left_unsent(destination, clock, monkeypatch):
    # Given a due destination, and another not due whose stored batch nobody is sending
    left_over = DestinationFactory(realtime=False, batch_interval_hours=24, last_batch_at=T0)
    map_segments(left_over, SPORTS)
    apply(qualify("a", SPORTS, at=T0))
    cut_batch(destination_id=left_over.pk, now=T0, only_if_due=False)
    queued: list[tuple[str, tuple, dict]] = []
    for task in (delivery.tasks.send_due_batch, delivery.tasks.send_stored_batch):
        monkeypatch.setattr(task, "apply_async",
                            lambda args, name=task.name, **options: queued.append((name, args, options)))

    # When beat's check runs
    delivery.tasks.start_due_batches()

    # Then each is queued once, to be dropped if not started before the next check
    assert queued == [
        ("delivery.tasks.send_due_batch", (destination.pk,), {"expires": 50}),
        ("delivery.tasks.send_stored_batch", (left_over.pk,), {"expires": 50}),
    ]
