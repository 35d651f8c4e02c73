"""Batch mode (CONTRACT §2): what a batch carries (first batches, changes, new mappings), erased devices."""

from __future__ import annotations

import datetime as dt

import pytest

from delivery.batch.transfers import cut_batch, find_due_batch_destination_ids
from delivery.lifecycle.erasure import erase_forgotten_devices
from delivery.models import BatchExit, Delivery, DeliveryDevice
from destinations.models import Destination, Mapping
from tests.delivery.batch.batch_runs import (
    DPID,
    GAMES,
    T0,
    later,
    run_batch,
    stored_documents,
    users_of,
    when,
)
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
from tests.delivery.pending_work import NEWS, SPORTS, map_segments
from tests.local_partner import Reply

pytestmark = pytest.mark.django_db


# ---- what a batch carries ----------------------------------------------------------------


def test_the_first_batch_carries_every_active_membership_of_the_mapped_segments(partner, batch_destination):
    # Given devices in and out of the mapped segments, onboarded data and partner IDs among them
    apply(id_sync("a", DPID, "a-1", at=T0), id_sync("a", DPID, "a-2", at=T0),
          id_sync("a", 99, "other", at=T0),
          qualify("a", SPORTS, at=T0, regions=[9, 6]), qualify("a", NEWS, at=later(seconds=1)),
          qualify("b", SPORTS, at=T0, onboarded=True),
          qualify("c", SPORTS, at=T0), disqualify("c", SPORTS, at=later(seconds=2)),
          qualify("d", GAMES, at=T0))

    # When the first batch runs
    sent = run_batch(batch_destination)

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


def test_the_first_batch_splits_requests_without_splitting_devices(partner, batch_destination):
    # Given a device with two partner IDs, after two devices without
    apply(qualify("a", SPORTS, at=T0), qualify("b", SPORTS, at=T0),
          id_sync("c", DPID, "c-1", at=T0), id_sync("c", DPID, "c-2", at=T0), qualify("c", SPORTS, at=T0))

    # When the batch runs (3 user objects a request)
    run_batch(batch_destination)

    # Then c's two user objects travel together in the second request
    stored = stored_documents()
    assert sorted(document["User_count"] for document in documents(partner)) == ["2", "2"]
    assert [[(user[0], user[1]) for user in statuses(document)] for document in stored] == [
        [("a", ""), ("b", "")],
        [("c", "c-1"), ("c", "c-2")],
    ]
    rows = DeliveryDevice.objects.order_by("delivery_id", "aam_uuid").values_list("aam_uuid", flat=True)
    assert list(rows) == ["a", "b", "c"]


def test_a_later_batch_carries_each_changed_membership_once_in_its_latest_state(
    partner, batch_destination, clock
):
    # Given a first batch
    apply(id_sync("a", DPID, "a-1", at=T0), qualify("a", SPORTS, at=T0), qualify("a", NEWS, at=T0),
          qualify("b", SPORTS, at=T0), qualify("quiet", SPORTS, at=T0))
    run_batch(batch_destination)
    before = len(partner.requests)

    # When, a day later, a leaves NEWS, b enters then leaves NEWS, c arrives onboarded, GAMES (unmapped) moves
    clock.move_to(later(days=1))
    apply(disqualify("a", NEWS, at=later(hours=20)))
    apply(qualify("b", NEWS, at=later(hours=21)))
    apply(disqualify("b", NEWS, at=later(hours=22)))
    apply(qualify("c", SPORTS, at=later(hours=23), onboarded=True), qualify("a", GAMES, at=later(hours=23)))
    run_batch(batch_destination)

    # Then each changed (device, segment) goes once, latest state, devices in the order of their last change
    assert users_of(partner, before) == [
        ("a", "a-1", [(str(NEWS), "0", when(later(hours=20)))]),
        ("b", "", [(str(NEWS), "0", when(later(hours=22)))]),
        ("c", "", [(str(SPORTS), "1", when(later(hours=23)))]),
    ]


def test_a_refresh_within_the_batch_carries_the_new_datetime(partner, batch_destination, clock):
    apply(qualify("a", SPORTS, at=T0))
    run_batch(batch_destination)
    clock.move_to(later(days=1))
    apply(qualify("a", SPORTS, at=later(hours=12)))

    run_batch(batch_destination)

    assert users_of(partner, 1) == [("a", "", [(str(SPORTS), "1", when(later(hours=12)))])]


def test_a_batch_with_nothing_changed_sends_nothing_and_moves_the_schedule(partner, batch_destination, clock):
    # Given a first batch
    apply(qualify("a", SPORTS, at=T0))
    run_batch(batch_destination)

    # When the next one finds nothing new
    clock.move_to(later(days=1))
    sent = run_batch(batch_destination)

    # Then nothing is sent, and the next is due a day later
    batch_destination.refresh_from_db()
    assert (sent, len(partner.requests)) == (0, 1)
    assert batch_destination.last_batch_at == later(days=1)
    assert find_due_batch_destination_ids(now=later(days=2) - dt.timedelta(seconds=1)) == set()
    assert find_due_batch_destination_ids(now=later(days=2)) == {batch_destination.pk}


def test_the_cutoff_moves_on_when_requests_fail(partner, batch_destination, clock):
    # Given a batch the partner refuses (500, then 500 on the retry)
    partner.script = [Reply(status=500)]
    apply(qualify("a", SPORTS, at=T0))
    run_batch(batch_destination)

    # When the next batch runs after the partner recovered
    partner.script = [Reply()]
    clock.move_to(later(days=1))
    apply(qualify("b", SPORTS, at=later(hours=1)))
    run_batch(batch_destination)

    # Then the failed request stays failed (redeliverable) and the new batch carries only b
    failed, delivered = Delivery.objects.order_by("pk")
    assert (failed.status, failed.kind, delivered.status) == ("failed", "batch", "delivered")
    assert [user[0] for user in users_of(partner, 2)] == ["b"]
    assert failed.attempts.count() == 2


def test_a_newly_mapped_segment_is_carried_in_full_by_the_next_batch(partner, batch_destination, clock):
    # Given a first batch, then GAMES mapped, with members from before and a change of SPORTS
    apply(qualify("a", SPORTS, at=T0), qualify("a", GAMES, at=T0), qualify("b", GAMES, at=T0),
          qualify("gone", GAMES, at=T0), disqualify("gone", GAMES, at=later(seconds=1)))
    run_batch(batch_destination)
    clock.move_to(later(days=1))
    map_segments(batch_destination, GAMES, start_date=later(days=1).date())
    apply(qualify("c", SPORTS, at=later(hours=2)))

    # When the next batch runs
    run_batch(batch_destination)

    # Then it carries SPORTS's change, and every active GAMES membership, each device once
    assert users_of(partner, 1) == [
        ("c", "", [(str(SPORTS), "1", when(later(hours=2)))]),
        ("a", "", [(str(GAMES), "1", when(T0))]),
        ("b", "", [(str(GAMES), "1", when(T0))]),
    ]


def test_a_mapping_that_missed_a_batch_is_carried_in_full_when_it_starts_again(
    partner, batch_destination, clock
):
    # Given NEWS's mapping ended before the second batch and restarted before the third
    apply(qualify("a", NEWS, at=T0))
    run_batch(batch_destination)
    mapping = Mapping.objects.get(destination=batch_destination, segment_id=NEWS)
    Mapping.objects.filter(pk=mapping.pk).update(end_date=T0.date())
    clock.move_to(later(days=1))
    run_batch(batch_destination)
    Mapping.objects.filter(pk=mapping.pk).update(end_date=None)
    clock.move_to(later(days=2))

    # When the third batch runs
    run_batch(batch_destination)

    # Then it carries NEWS's active members again
    assert users_of(partner, 1) == [("a", "", [(str(NEWS), "1", when(T0))])]


def test_onboarded_data_goes_only_in_batches_when_real_time_is_on_too(partner, batch_destination, clock):
    # Given a destination in both modes
    Destination.objects.filter(pk=batch_destination.pk).update(realtime=True)
    apply(qualify("live", SPORTS, at=T0), qualify("file", SPORTS, at=T0, onboarded=True))

    # When real time and the batch both run
    send_realtime(batch_destination)
    realtime = users_of(partner)
    run_batch(batch_destination)

    # Then the onboarded device went only in the batch
    assert [user[0] for user in realtime] == ["live"]
    assert [user[0] for user in users_of(partner, 1)] == ["file", "live"]  # a first batch: by AAM UUID


def test_a_paused_destination_cuts_no_batch_and_catches_up_after_resuming(partner, batch_destination, clock):
    apply(qualify("a", SPORTS, at=T0))
    Destination.objects.filter(pk=batch_destination.pk).update(enabled=False)

    paused = cut_batch(destination_id=batch_destination.pk, now=T0, only_if_due=False)
    Destination.objects.filter(pk=batch_destination.pk).update(enabled=True)
    run_batch(batch_destination)

    assert paused.skipped == "paused"
    assert [user[0] for user in users_of(partner)] == ["a"]


# ---- erased devices ------------------------------------------------------------------------


def test_an_erased_devices_exits_go_in_the_next_batch_then_leave_the_stored_document(
    partner, batch_destination, clock
):
    # Given a device sent in a batch, then opted out and erased before the next batch
    apply(id_sync("a", DPID, "a-1", at=T0), qualify("a", SPORTS, at=T0, regions=[7]),
          qualify("b", SPORTS, at=T0))
    run_batch(batch_destination)
    clock.move_to(later(hours=1))
    apply(opt_out("a", at=later(hours=1)))
    erased = erase_forgotten_devices(now=later(hours=1))

    # When the next batch runs, then the erasure again
    clock.move_to(later(days=1))
    run_batch(batch_destination)
    erase_forgotten_devices(now=later(days=1))

    # Then the partner got a's "0" under its partner ID, and no stored document holds a any more
    assert erased.erased == 1
    [document] = documents(partner, 1)
    assert statuses(document) == [("a", "a-1", [(str(SPORTS), "0", when(later(hours=1)))])]
    assert document["Users"][0]["AAM_Regions"] == ["7"]
    assert not BatchExit.objects.exists()
    assert not DeliveryDevice.objects.filter(aam_uuid="a").exists()
    assert [[user["AAM_UUID"] for user in body["Users"]] for body in stored_documents()] == [["b"], []]
