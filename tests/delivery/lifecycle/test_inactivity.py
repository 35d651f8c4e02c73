"""delivery.lifecycle.expiry: a device not seen for 120 days leaves every segment."""

from __future__ import annotations

import datetime as dt

import pytest

from delivery.lifecycle.expiry import leave_inactive_devices
from delivery.models import DestinationDevice, Device, DeviceErasure, Membership, MembershipChange
from delivery.sending.documents import format_aam_time
from tests.delivery.lifecycle.memberships import T0, UUID, set_ttl
from tests.delivery.lifecycle_events import apply, documents, qualify, send_realtime, statuses
from tests.delivery.pending_work import NEWS, SPORTS

pytestmark = pytest.mark.django_db


# ---- inactivity --------------------------------------------------------------------------


def test_a_device_not_seen_for_120_days_leaves_every_segment_whatever_its_ttl(partner, destination, clock):
    # Given a device in a never-expiring segment and a 365-day one, last seen at T0
    set_ttl(SPORTS, 0)
    set_ttl(NEWS, 365)
    apply(qualify(UUID, SPORTS, at=T0), qualify(UUID, NEWS, at=T0))
    send_realtime(destination)
    inactive_since = T0 + dt.timedelta(days=120)

    # When the sweep runs a second before, then at, 120 days after
    clock.move_to(inactive_since)
    early = leave_inactive_devices(now=inactive_since - dt.timedelta(seconds=1))
    result = leave_inactive_devices(now=inactive_since)
    send_realtime(destination)

    # Then both segments ended at that moment, the partner got "0"s, and the device is to be forgotten
    assert early.devices == 0
    assert (result.devices, result.memberships, result.destination_ids) == (1, 2, {destination.pk})
    assert not Membership.objects.filter(is_active=True).exists()
    when = format_aam_time(inactive_since)
    [(_, _, segments)] = statuses(documents(partner)[-1])
    assert segments == [(str(NEWS), "0", when), (str(SPORTS), "0", when)]
    assert list(DeviceErasure.objects.values_list("aam_uuid", "reason")) == [(UUID, "inactivity")]


def test_the_inactivity_sweep_takes_each_device_once(clock):
    # Given a device inactive for 200 days
    apply(qualify(UUID, SPORTS, at=T0))
    now = T0 + dt.timedelta(days=200)

    # When the sweep runs twice
    first = leave_inactive_devices(now=now)
    second = leave_inactive_devices(now=now)

    # Then the second finds nothing to do
    assert (first.devices, second.devices) == (1, 0)
    assert MembershipChange.objects.filter(is_active=False).count() == 1
    assert DestinationDevice.objects.count() == 0  # no destination maps the segment
    assert Device.objects.filter(pk=UUID).exists()  # forgotten later, by the erasure
