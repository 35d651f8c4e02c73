"""Redeliveries: a delivery's document sent again, as a new delivery of kind `redelivery` (CONTRACT §5).

An operator's redelivery (`delivery.services.redeliver`) and the circuit breaker's
(`delivery.sending.outage`, a failed batch request parked until the circuit closes)
are made here alike.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from delivery.leases import lease_until
from delivery.models import Delivery, DeliveryDevice, DeliveryKind, DeliveryStatus


class RedeliveryConflict(Exception):
    """The original delivery is still pending: redeliver it once it has ended (HTTP 409)."""


def create_redelivery(*, delivery: Delivery, leased: bool = True) -> Delivery:
    """Create a pending redelivery of `delivery`: the same bytes and document ID, kind `redelivery`.

    Raises RedeliveryConflict while `delivery` is pending. The caller enqueues
    `delivery.tasks.send_delivery_task` on commit; should that be lost, the lease
    set here lets the reaper send it. Not `leased`, it waits parked
    (`delivery.leases.take_parked`), as the circuit breaker's do until the circuit closes.
    """
    with transaction.atomic():
        original = Delivery.objects.select_for_update().select_related("destination").get(pk=delivery.pk)
        if original.status == DeliveryStatus.PENDING:
            raise RedeliveryConflict(f"delivery {original.pk} is still pending; redeliver it once it ended")
        redelivery = Delivery.objects.create(
            destination=original.destination,
            kind=DeliveryKind.REDELIVERY,
            document_id=original.document_id,
            body=bytes(original.body),
            user_count=original.user_count,
            redelivery_of=original,
            lease_until=lease_until(destination=original.destination, now=timezone.now()) if leased else None,
        )
        aam_uuids = original.devices.values_list("aam_uuid", flat=True)
        DeliveryDevice.objects.bulk_create(DeliveryDevice(delivery=redelivery, aam_uuid=a) for a in aam_uuids)
    return redelivery
