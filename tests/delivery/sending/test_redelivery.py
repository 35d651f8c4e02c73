"""A redelivery sends the same bytes under the same document id; a pending delivery cannot be redelivered."""

from __future__ import annotations

import pytest

from delivery.models import DeliveryKind, DeliveryStatus
from delivery.sending.redelivering import RedeliveryConflict, create_redelivery
from delivery.sending.rounds import send_deliveries, send_delivery
from tests.delivery.sending.claims import claim
from tests.local_partner import Reply

pytestmark = pytest.mark.django_db


def test_a_redelivery_sends_the_same_bytes_and_document_id(partner, destination):
    partner.script = [Reply(status=500)]
    [original] = claim(destination)
    send_deliveries(destination=destination, deliveries=[original])
    partner.script = [Reply(status=200)]

    redelivery = create_redelivery(delivery=original)
    send_delivery(delivery_id=redelivery.pk)

    redelivery.refresh_from_db()
    assert (redelivery.kind, redelivery.status) == (DeliveryKind.REDELIVERY, DeliveryStatus.DELIVERED)
    assert redelivery.redelivery_of_id == original.pk
    assert list(redelivery.devices.values_list("aam_uuid", flat=True)) == ["dev-000"]
    assert partner.requests[-1].body == partner.requests[0].body == bytes(original.body)
    assert partner.requests[-1].headers["X-AAMDest-Delivery-Id"] == str(original.document_id)


def test_a_pending_delivery_cannot_be_redelivered(destination):
    [delivery] = claim(destination)

    with pytest.raises(RedeliveryConflict):
        create_redelivery(delivery=delivery)
