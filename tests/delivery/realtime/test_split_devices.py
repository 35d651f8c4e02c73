"""A device split over several requests stays held until every piece has ended (CONTRACT §2.5, order)."""

from __future__ import annotations

import datetime as dt

import pytest

from delivery.models import Delivery, DeliveryStatus, DestinationDevice
from delivery.realtime.claiming import claim_due_requests
from delivery.sending.attempts import Sending
from delivery.sending.ending import end_deliveries
from tests.delivery.pending_work import map_segments, pending_device
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db

SEGMENT = 14356
UUID = "split-device"


@pytest.fixture
def destination():
    """Requests of 2 user objects, sent at once."""
    destination = DestinationFactory(max_users_per_request=2, max_wait_ms=0)
    map_segments(destination, SEGMENT)
    return destination


def end(destination, delivery: Delivery, status: DeliveryStatus) -> None:
    end_deliveries(destination=destination, ended=[(Sending(delivery, 1, delivery.lease_until), status)])


def changed_again(destination, now: dt.datetime) -> None:
    DestinationDevice.objects.filter(destination=destination, device_id=UUID).update(pending_since=now)


@pytest.mark.parametrize("first_ended", [0, 1], ids=["first piece ends first", "last piece ends first"])
def test_a_new_change_waits_until_every_piece_of_a_split_device_has_ended(destination, now, first_ended):
    # Given a device with 3 partner IDs, split over two requests of 2 and 1 user objects
    pending_device(destination, UUID, pending_since=now, active=(SEGMENT,), partner_ids=("p1", "p2", "p3"))
    pieces = claim_due_requests(destination=destination, now=now, max_requests=10)
    assert [piece.user_count for piece in pieces] == [2, 1]

    # When one piece is delivered while the other waits for its retry, and the device changes again
    end(destination, pieces[first_ended], DeliveryStatus.DELIVERED)
    changed_again(destination, now)
    while_one_waits = claim_due_requests(destination=destination, now=now, max_requests=10)

    # Then the device is not sent again until the other piece has ended too
    assert while_one_waits == []
    end(destination, pieces[1 - first_ended], DeliveryStatus.FAILED)
    after_both = claim_due_requests(destination=destination, now=now, max_requests=10)
    assert [piece.user_count for piece in after_both] == [2, 1]
