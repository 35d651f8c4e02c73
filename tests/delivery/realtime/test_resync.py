"""Resync (CONTRACT §7): which devices are marked, in chunks, and what the normal path then sends."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import DatabaseError
from django.utils import timezone

import delivery.realtime.resync as resync_module
from delivery import tasks
from delivery.models import DeliveryKind, DeliveryStatus, DestinationDevice, Device, Membership
from delivery.realtime.claiming import claim_due_requests
from delivery.realtime.resync import ResyncProgress, count_resync_devices, mark_for_resync
from delivery.sending.rounds import send_deliveries
from tests.delivery.lifecycle_events import apply, disqualify, documents, qualify, send_realtime, statuses
from tests.delivery.log_rows import TIMEOUT, log_delivery
from tests.delivery.pending_work import NEWS, OLD, SPORTS, map_segments, pending_device
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
UNMAPPED = 99_001


def pending_ids(destination) -> list[str]:
    return sorted(
        DestinationDevice.objects.filter(destination=destination, pending_since__isnull=False)
        .values_list("device_id", flat=True)
    )


def delivered(destination) -> None:
    """Clear every pending mark as if each device had just been sent (a claim sets `last_sent_at`)."""
    DestinationDevice.objects.filter(destination=destination).update(
        pending_since=None, last_sent_at=timezone.now()
    )


def resync(destination, *, since=None, chunk_size=2, progress=None) -> ResyncProgress:
    return mark_for_resync(destination=destination, since=since, now=timezone.now(),
                           progress=progress or ResyncProgress(), chunk_size=chunk_size)


def test_every_device_with_an_active_mapping_is_marked_even_if_sent_a_minute_ago(destination, clock):
    # Given devices active in mapped segments, all sent a minute ago, and others that must not be chosen
    apply(qualify("a", SPORTS, at=T0), qualify("b", NEWS, at=T0), qualify("c", SPORTS, at=T0),
          qualify("c", NEWS, at=T0), qualify("left", SPORTS, at=T0), qualify("unmapped", UNMAPPED, at=T0))
    apply(disqualify("left", SPORTS, at=T0 + dt.timedelta(seconds=1)))
    delivered(destination)
    clock.move_to(T0 + dt.timedelta(minutes=1))

    # When the destination is resynced
    assert count_resync_devices(destination=destination, since=None, now=timezone.now()) == 3
    progress = resync(destination)

    # Then exactly the devices with something active to send are pending, the refresh rule aside
    assert pending_ids(destination) == ["a", "b", "c"]
    assert (progress.devices, progress.chunks, progress.after) == (3, 2, "c")


def test_an_expired_membership_or_an_inactive_mapping_chooses_no_device(destination, clock):
    apply(qualify("expired", OLD, at=T0), qualify("kept", SPORTS, at=T0))
    Membership.objects.filter(device_id="expired").update(expires_at=T0 - dt.timedelta(seconds=1))
    destination.mappings.filter(segment_id=SPORTS).update(end_date=T0.date() - dt.timedelta(days=1))
    delivered(destination)

    assert count_resync_devices(destination=destination, since=None, now=timezone.now()) == 0
    assert resync(destination).devices == 0
    assert pending_ids(destination) == []


def test_a_pending_mark_keeps_its_place_and_a_device_in_flight_waits_for_its_request(
    destination, partner, clock
):
    # Given one device pending since long ago and one held by a request in flight
    apply(qualify("flying", SPORTS, at=T0))
    [in_flight] = claim_due_requests(destination=destination, now=timezone.now(), max_requests=10)
    first = pending_device(destination, "queued", pending_since=T0 - dt.timedelta(hours=1), active=(SPORTS,))

    # When resynced
    resync(destination)

    # Then the old mark keeps its time, and the device in flight is pending but not claimable
    assert DestinationDevice.objects.get(pk=first.pk).pending_since == T0 - dt.timedelta(hours=1)
    assert pending_ids(destination) == ["flying", "queued"]
    [again] = claim_due_requests(destination=destination, now=timezone.now(), max_requests=10)
    assert list(again.devices.values_list("aam_uuid", flat=True)) == ["queued"]
    send_deliveries(destination=destination, deliveries=[in_flight, again])
    # Once its request has ended, the device in flight goes out again, alone
    assert send_realtime(destination) == 1
    assert [user["AAM_UUID"] for user in documents(partner, 2)[0]["Users"]] == ["flying"]


def test_the_normal_path_sends_each_device_its_current_full_state(destination, partner, clock):
    # Given devices sent a minute ago, one of which joined another segment since without a send
    apply(qualify("a", SPORTS, at=T0), qualify("b", NEWS, at=T0))
    send_realtime(destination)
    clock.move_to(T0 + dt.timedelta(minutes=1))
    apply(qualify("a", NEWS, at=T0 + dt.timedelta(seconds=30), onboarded=True))
    start = len(partner.requests)

    # When resynced, then flushed by the normal real-time path
    resync(destination, chunk_size=1)
    send_realtime(destination)

    # Then each device's every active mapped segment is sent as "1"
    users = [user for document in documents(partner, start) for user in statuses(document)]
    assert sorted(users) == [
        ("a", "", [(str(NEWS), "1", "Mon Mar 02 09:00:30 UTC 2026"),
                   (str(SPORTS), "1", "Mon Mar 02 09:00:00 UTC 2026")]),
        ("b", "", [(str(NEWS), "1", "Mon Mar 02 09:00:00 UTC 2026")]),
    ]
    assert pending_ids(destination) == []


def test_with_since_only_the_devices_of_failed_deliveries_since_then_are_marked(destination, clock):
    # Given deliveries: failed before and after `since`, delivered after it, a failed test document
    for uuid in ("old", "new1", "new2", "ok", "sample", "erased"):
        apply(qualify(uuid, SPORTS, at=T0))
    delivered(destination)
    since = T0 - dt.timedelta(minutes=5)
    log_delivery(destination, created_at=since - dt.timedelta(hours=1), outcome=DeliveryStatus.FAILED,
                 tries=[TIMEOUT], aam_uuids=["old"])
    log_delivery(destination, created_at=since, outcome=DeliveryStatus.FAILED, tries=[TIMEOUT],
                 aam_uuids=["new1", "new2", "erased"])
    log_delivery(destination, created_at=since, outcome=DeliveryStatus.DELIVERED, aam_uuids=["ok"])
    log_delivery(destination, created_at=since, outcome=DeliveryStatus.FAILED, tries=[TIMEOUT],
                 aam_uuids=["sample"], kind=DeliveryKind.TEST)
    log_delivery(DestinationFactory(), created_at=since, outcome=DeliveryStatus.FAILED, tries=[TIMEOUT],
                 aam_uuids=["ok"])
    Device.objects.filter(aam_uuid="erased").delete()

    # When resynced since then
    assert count_resync_devices(destination=destination, since=since, now=timezone.now()) == 2
    progress = resync(destination, since=since)

    # Then only the failed deliveries' devices that still exist
    assert pending_ids(destination) == ["new1", "new2"]
    assert progress.devices == 2


def test_a_failure_mid_way_leaves_the_committed_chunks_and_a_retry_goes_on_from_there(
    destination, clock, monkeypatch
):
    # Given five devices and a database that fails on the third chunk
    for uuid in ("a", "b", "c", "d", "e"):
        apply(qualify(uuid, SPORTS, at=T0))
    delivered(destination)
    real_mark, calls = resync_module._mark_chunk, []

    def failing_third(**kwargs):
        calls.append(kwargs["device_ids"])
        if len(calls) == 3:
            real_mark(**kwargs)  # written, then rolled back with its transaction
            raise DatabaseError("connection lost")
        return real_mark(**kwargs)

    monkeypatch.setattr(resync_module, "_mark_chunk", failing_third)
    progress = ResyncProgress()

    # When the resync stops there
    with pytest.raises(DatabaseError):
        resync(destination, progress=progress)

    # Then the first two chunks stand, the third is rolled back whole, and progress says so
    assert pending_ids(destination) == ["a", "b", "c", "d"]
    assert (progress.after, progress.devices, progress.chunks) == ("d", 4, 2)

    # When retried from there (devices a-d sent meanwhile), only the rest is marked
    delivered(destination)
    monkeypatch.setattr(resync_module, "_mark_chunk", real_mark)
    resync(destination, progress=progress)
    assert pending_ids(destination) == ["e"]


def test_the_task_wakes_the_destination_after_each_chunk_and_retries_from_where_it_stopped(
    destination, clock, monkeypatch, woken
):
    for uuid in ("a", "b", "c"):
        apply(qualify(uuid, SPORTS, at=T0))
    delivered(destination)
    monkeypatch.setattr(tasks, "mark_for_resync",
                        lambda **kwargs: mark_for_resync(**kwargs, chunk_size=2))

    tasks.resync_destination(destination.pk, None, timezone.now().isoformat())

    assert pending_ids(destination) == ["a", "b", "c"]
    assert woken == [{destination.pk}, {destination.pk}]


def test_the_task_retries_from_the_last_committed_chunk_after_a_database_error(
    destination, clock, monkeypatch
):
    def stop_after_one_chunk(*, progress, **kwargs):
        progress.after, progress.devices = "b", 2
        raise DatabaseError("connection lost")

    retried: list[dict] = []

    def retry(**kwargs):
        retried.append(kwargs)
        return RuntimeError("retry")

    monkeypatch.setattr(tasks, "mark_for_resync", stop_after_one_chunk)
    monkeypatch.setattr(tasks.resync_destination, "retry", retry)
    started = timezone.now().isoformat()

    with pytest.raises(RuntimeError):
        tasks.resync_destination(destination.pk, None, started)

    assert retried[0]["args"] == (destination.pk, None, started, "b")


def test_the_task_of_a_deleted_destination_does_nothing(db):
    tasks.resync_destination(999_999, None, timezone.now().isoformat())


def test_a_paused_destination_accumulates_and_sends_on_the_resume(destination, partner, clock):
    apply(qualify("a", SPORTS, at=T0))
    send_realtime(destination)
    destination.enabled = False
    destination.save()
    start = len(partner.requests)

    resync(destination)
    assert send_realtime(destination) == 0
    assert pending_ids(destination) == ["a"]

    destination.enabled = True
    destination.save()
    assert send_realtime(destination) == 1
    assert [user["AAM_UUID"] for user in documents(partner, start)[0]["Users"]] == ["a"]


@pytest.mark.parametrize("mapped", [(SPORTS,), (SPORTS, NEWS, OLD)])
def test_devices_are_read_in_keyset_order_whatever_the_mapped_segments(mapped, partner, clock):
    destination = DestinationFactory(url=partner.url, max_wait_ms=0)
    map_segments(destination, *mapped)
    uuids = [f"d{index:02d}" for index in range(7)]
    apply(*(qualify(uuid, mapped[index % len(mapped)], at=T0) for index, uuid in enumerate(uuids)))
    delivered(destination)

    progress = resync(destination, chunk_size=3)

    assert (progress.devices, progress.chunks) == (7, 3)
    assert pending_ids(destination) == uuids


def test_a_resync_asked_through_the_api_reaches_the_partner_through_the_queued_tasks(
    destination, partner, operator_client, eager_tasks, empty_redis
):
    # Given two devices sent a minute ago (tasks run in place, as a worker would run them)
    apply(qualify("a", SPORTS, at=timezone.now()), qualify("b", NEWS, at=timezone.now()))
    send_realtime(destination)
    start = len(partner.requests)

    # When an operator asks for a resync
    response = operator_client.post(f"/api/v1/destinations/{destination.pk}/resync/", {}, format="json")

    # Then the maintenance task marks them and the flush it wakes sends both again
    assert (response.status_code, response.json()) == (202, {"devices": 2})
    sent = [user["AAM_UUID"] for document in documents(partner, start) for user in document["Users"]]
    assert sorted(sent) == ["a", "b"]
    assert pending_ids(destination) == []
