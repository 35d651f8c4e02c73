"""delivery.lifecycle.erasure: opt-outs and inactive devices are forgotten once their "0"s are out."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone

from delivery.lifecycle.erasure import ERASURE_DEADLINE, erase_forgotten_devices
from delivery.lifecycle.expiry import INACTIVITY, leave_inactive_devices
from delivery.models import (
    Delivery,
    DeliveryDevice,
    DestinationDevice,
    Device,
    DeviceErasure,
    Membership,
    MembershipChange,
    PartnerId,
)
from delivery.realtime.claiming import claim_due_requests
from delivery.sending.documents import format_aam_time
from delivery.sending.rounds import send_deliveries
from destinations.models import Destination
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
from tests.delivery.pending_work import NEWS, OLD, SPORTS, map_segments
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 2, 2, 9, 0, tzinfo=dt.UTC)
UUID = "19393572368547369350319949416899715727"
OTHER = "0578240750487542456854736923319946899715232"


def later(**delta: float) -> dt.datetime:
    return T0 + dt.timedelta(**delta)


def stored_users(delivery: Delivery) -> tuple[str, list[str]]:
    document = json.loads(bytes(delivery.body))
    return document["User_count"], [user["AAM_UUID"] for user in document["Users"]]


def known(uuid: str = UUID) -> dict[str, int]:
    return {
        "devices": Device.objects.filter(pk=uuid).count(),
        "memberships": Membership.objects.filter(device_id=uuid).count(),
        "partner_ids": PartnerId.objects.filter(device_id=uuid).count(),
        "changes": MembershipChange.objects.filter(aam_uuid=uuid).count(),
        "states": DestinationDevice.objects.filter(device_id=uuid).count(),
        "documents": DeliveryDevice.objects.filter(aam_uuid=uuid).count(),
        "requests": DeviceErasure.objects.filter(aam_uuid=uuid).count(),
    }


NOTHING = dict.fromkeys(
    ["devices", "memberships", "partner_ids", "changes", "states", "documents", "requests"], 0
)


def sent_with_two_partner_ids(partner, destination: Destination, clock) -> Destination:
    """UUID with two partner IDs, active in SPORTS and NEWS, having left OLD, sent beside OTHER.

    Returns a second destination whose mapping of SPORTS ended yesterday.
    """
    unmapped = DestinationFactory(url=partner.url, max_wait_ms=0, aam_destination_id=999)
    yesterday = T0.date() - dt.timedelta(days=1)
    map_segments(unmapped, SPORTS, start_date=yesterday - dt.timedelta(days=9), end_date=yesterday)
    dpid = destination.user_dpid
    apply(id_sync(UUID, dpid, "dp-1", at=T0), id_sync(UUID, dpid, "dp-2", at=T0), qualify(UUID, OLD, at=T0),
          qualify(UUID, SPORTS, at=T0, regions=[9]), qualify(UUID, NEWS, at=T0),
          qualify(OTHER, SPORTS, at=T0))
    clock.move_to(later(minutes=1))
    apply(qualify(UUID, OLD, at=later(minutes=1)))  # a refresh: nothing to send
    apply(disqualify(UUID, OLD, at=later(minutes=1)))
    send_realtime(destination)
    send_realtime(unmapped)
    return unmapped


def test_an_opt_out_sends_zeros_per_partner_id_then_erases_the_device_everywhere(
    partner, destination, clock, viewer_client
):
    # Given a device with two partner IDs, active in SPORTS and NEWS, having left OLD, sent beside another
    unmapped = sent_with_two_partner_ids(partner, destination, clock)
    before = len(partner.requests)

    # When the device opts out, its "0"s go out, and the erasure runs
    clock.move_to(later(minutes=2))
    apply(opt_out(UUID, at=later(minutes=2)))
    waiting = erase_forgotten_devices(now=later(minutes=2))
    send_realtime(destination)
    send_realtime(unmapped)
    erased = erase_forgotten_devices(now=later(minutes=3))

    # Then the partner got one user object per partner ID listing each active segment as "0", once
    assert (waiting.erased, waiting.waiting) == (0, 1)
    [document] = documents(partner, before)
    assert document["AAM_Destination_Id"] == str(destination.aam_destination_id)
    when = format_aam_time(later(minutes=2))
    zeros = [(str(NEWS), "0", when), (str(SPORTS), "0", when)]
    assert statuses(document) == [(UUID, "dp-1", zeros), (UUID, "dp-2", zeros)]
    # and the device is gone, from the stored documents too, the other device kept
    assert (erased.erased, erased.documents) == (1, 2)
    assert known() == NOTHING
    first, second = Delivery.objects.order_by("pk")
    assert stored_users(first) == ("1", [OTHER])
    assert (first.user_count, second.user_count) == (1, 0)
    assert stored_users(second) == ("0", [])
    assert viewer_client.get(f"/api/v1/profiles/{UUID}/").status_code == 404
    assert viewer_client.get(f"/api/v1/profiles/{OTHER}/").status_code == 200


def test_the_erasure_waits_while_a_document_carrying_the_device_is_in_flight(partner, destination, clock):
    # Given a device that opted out, whose "0" has been claimed but not sent
    apply(qualify(UUID, SPORTS, at=T0))
    send_realtime(destination)
    apply(opt_out(UUID, at=later(seconds=1)))
    deliveries = claim_due_requests(destination=destination, now=timezone.now(), max_requests=1)

    # When the erasure runs before and after it is sent
    while_in_flight = erase_forgotten_devices(now=timezone.now())
    send_deliveries(destination=destination, deliveries=deliveries)
    after_sending = erase_forgotten_devices(now=timezone.now())

    # Then the document went out as claimed, and only then was the device erased from it
    assert (while_in_flight.erased, after_sending.erased) == (0, 1)
    zero = (str(SPORTS), "0", format_aam_time(later(seconds=1)))
    assert statuses(documents(partner)[-1]) == [(UUID, "", [zero])]
    assert stored_users(Delivery.objects.get(pk=deliveries[0].pk)) == ("0", [])


def test_a_later_event_for_an_erased_device_starts_from_nothing(partner, destination, clock, viewer_client):
    # Given an erased device
    apply(id_sync(UUID, destination.user_dpid, "dp-1", at=T0), qualify(UUID, SPORTS, at=T0, regions=[9]))
    apply(opt_out(UUID, at=later(seconds=1)))
    send_realtime(destination)
    erase_forgotten_devices(now=timezone.now())

    # When it qualifies again
    clock.move_to(later(minutes=5))
    apply(qualify(UUID, NEWS, at=later(minutes=5), regions=[6]))
    send_realtime(destination)

    # Then only the new segment, region and no partner ID are known and sent
    profile = viewer_client.get(f"/api/v1/profiles/{UUID}/").json()
    assert (profile["regions"], profile["partner_ids"]) == ([6], [])
    assert [segment["segment_id"] for segment in profile["segments"]] == [NEWS]
    document = documents(partner)[-1]
    assert statuses(document) == [(UUID, "", [(str(NEWS), "1", format_aam_time(later(minutes=5)))])]
    assert document["Users"][0]["AAM_Regions"] == ["6"]


def test_segments_entered_between_an_opt_out_and_its_erasure_are_ended_too(partner, destination, clock):
    # Given a device that opted out, then qualified again before its erasure
    apply(qualify(UUID, SPORTS, at=T0))
    apply(opt_out(UUID, at=later(seconds=1)))
    send_realtime(destination)
    clock.move_to(later(seconds=2))
    apply(qualify(UUID, NEWS, at=later(seconds=2)))
    send_realtime(destination)

    # When the erasure runs, the new "0" goes out, and the erasure runs again
    clock.move_to(later(seconds=3))
    first = erase_forgotten_devices(now=later(seconds=3))
    send_realtime(destination)
    second = erase_forgotten_devices(now=later(seconds=3))

    # Then the opt-out held: NEWS was ended and sent as "0" before the device was erased
    assert (first.erased, first.waiting, first.destination_ids) == (0, 1, {destination.pk})
    zero = (str(NEWS), "0", format_aam_time(later(seconds=3)))
    assert statuses(documents(partner)[-1]) == [(UUID, "", [zero])]
    assert second.erased == 1
    assert known() == NOTHING


def test_a_paused_destination_holds_the_erasure_until_it_resumes_or_the_deadline_passes(partner, clock):
    # Given two devices that opted out while their destination was paused
    paused = DestinationFactory(url=partner.url, max_wait_ms=0, enabled=False)
    map_segments(paused, SPORTS)
    apply(qualify(UUID, SPORTS, at=T0), qualify(OTHER, SPORTS, at=T0))
    apply(opt_out(UUID, at=later(seconds=1)))
    clock.move_to(later(days=1))
    apply(opt_out(OTHER, at=later(days=1)))

    # When the erasure runs while paused, at the first request's deadline, then after the destination resumed
    while_paused = erase_forgotten_devices(now=later(days=1))
    at_deadline = erase_forgotten_devices(now=T0 + ERASURE_DEADLINE)
    Destination.objects.filter(pk=paused.pk).update(enabled=True)
    send_realtime(paused)
    after_resume = erase_forgotten_devices(now=T0 + ERASURE_DEADLINE)

    # Then both waited; the first was erased at its deadline unsent, the second once its "0" went out
    assert (while_paused.erased, while_paused.waiting) == (0, 2)
    assert (at_deadline.erased, at_deadline.waiting) == (1, 1)
    assert [user[0] for user in statuses(documents(partner)[-1])] == [OTHER]
    assert after_resume.erased == 1
    assert Device.objects.count() == 0


def test_an_inactive_device_is_forgotten_once_its_zeros_are_out(partner, destination, clock):
    # Given a device left inactive
    apply(id_sync(UUID, destination.user_dpid, "dp-1", at=T0), qualify(UUID, SPORTS, at=T0))
    send_realtime(destination)
    clock.move_to(T0 + INACTIVITY)
    leave_inactive_devices(now=T0 + INACTIVITY)

    # When the erasure runs before and after its "0" goes out
    before = erase_forgotten_devices(now=T0 + INACTIVITY)
    send_realtime(destination)
    after = erase_forgotten_devices(now=T0 + INACTIVITY)

    # Then it is forgotten only after
    assert (before.erased, after.erased) == (0, 1)
    zero = (str(SPORTS), "0", format_aam_time(T0 + INACTIVITY))
    assert statuses(documents(partner)[-1]) == [(UUID, "dp-1", [zero])]
    assert known() == NOTHING


def test_an_inactive_device_seen_again_before_its_erasure_is_kept(clock):
    # Given a device left inactive, then seen again
    apply(id_sync(UUID, 20914, "dp-1", at=T0), qualify(UUID, SPORTS, at=T0))
    clock.move_to(T0 + INACTIVITY)
    leave_inactive_devices(now=T0 + INACTIVITY)
    apply(qualify(UUID, NEWS, at=T0 + INACTIVITY))

    # When the erasure runs
    result = erase_forgotten_devices(now=T0 + INACTIVITY)

    # Then it keeps its partner IDs and new segment, and is no longer to be forgotten
    assert (result.erased, result.cancelled) == (0, 1)
    assert known()["partner_ids"] == 1
    assert list(Membership.objects.filter(is_active=True).values_list("segment_id", flat=True)) == [NEWS]
    assert not DeviceErasure.objects.exists()


def test_an_opt_out_of_an_unknown_device_stores_nothing(clock):
    apply(opt_out(UUID, at=T0))

    assert known() == NOTHING
