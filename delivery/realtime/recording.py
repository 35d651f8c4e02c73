"""Recording a claim: its pending deliveries, the devices they carry, and the holds (CONTRACT §2, order).

Each request becomes a pending, leased `Delivery` holding its document; it notes the
devices it carries (`DeliveryDevice`), and each claimed `DestinationDevice` is held
by a request carrying it (`in_flight_delivery`; a device split across requests by
the last of its pieces, which `delivery.sending.ending` passes on to the others),
its pending mark cleared and the claim noted as its last send.

On PostgreSQL these are two statements over arrays, whatever the claim's size: no
model instance per carried device, no subquery per held row to find its holder again
(the claim knows it), and the documents travel as binary parameters
(`delivery.bulk.insert_bound`, shared with the batch's documents).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from django.db.models import OuterRef, Subquery

from delivery import bulk, dialect
from delivery.models import Delivery, DeliveryDevice, DeliveryKind, DeliveryStatus, DestinationDevice
from delivery.realtime.user_objects import PendingDestinationDevice
from delivery.sending.documents import UserObject
from destinations.models import Destination


def create_deliveries(
    *, destination: Destination, bodies: Sequence[bytes], user_counts: Sequence[int], lease: dt.datetime
) -> list[Delivery]:
    """Create one pending real-time delivery per document, leased until `lease`, in order; return them."""
    deliveries = [
        Delivery(destination=destination, kind=DeliveryKind.REALTIME, status=DeliveryStatus.PENDING,
                 body=body, user_count=user_count, lease_until=lease)
        for body, user_count in zip(bodies, user_counts, strict=True)
    ]
    bulk.insert_bound(deliveries)
    return deliveries


def carry_and_hold(
    *,
    deliveries: Sequence[Delivery],
    requests: Sequence[tuple[Sequence[PendingDestinationDevice], Sequence[UserObject]]],
    now: dt.datetime,
) -> None:
    """Note the devices each delivery carries; hold each claimed device by one of them.

    `requests`: (destination devices, user objects) of each delivery, in the same order.
    The claim is noted as each device's last send, so that the 3-day refresh rule
    counts a request in flight, or one that failed (still redeliverable), as sent; a
    success moves `last_sent_at` on.
    """
    carried = [
        (delivery.pk, aam_uuid)
        for delivery, (_, users) in zip(deliveries, requests, strict=True)
        for aam_uuid in dict.fromkeys(user.aam_uuid for user in users)
    ]
    # If split, the last piece holds the device (later pieces overwrite earlier ones).
    holders = {
        destination_device.pk: delivery.pk
        for delivery, (destination_devices, _) in zip(deliveries, requests, strict=True)
        for destination_device in destination_devices
    }
    if dialect.is_postgresql():
        _write_postgresql(carried=carried, holders=holders, now=now)
    else:
        _write_portable(carried=carried, holders=holders, deliveries=deliveries, now=now)


def _write_postgresql(*, carried: list[tuple[int, str]], holders: dict[int, int], now: dt.datetime) -> None:
    devices, destination_devices = DeliveryDevice._meta.db_table, DestinationDevice._meta.db_table
    with dialect.server_side_cursor() as cursor:
        cursor.execute(
            f"""
            WITH carried AS (
                INSERT INTO {devices} (delivery_id, aam_uuid)
                SELECT * FROM unnest(%b::bigint[], %b::text[])
            )
            UPDATE {destination_devices} AS s
            SET in_flight_delivery_id = h.delivery_id, pending_since = NULL,
                left_segment_ids = '[]'::jsonb, last_sent_at = %s
            FROM unnest(%b::bigint[], %b::bigint[]) AS h(id, delivery_id)
            WHERE s.id = h.id
            """,  # noqa: S608 - table names from the models
            [
                [delivery_id for delivery_id, _ in carried],
                [aam_uuid for _, aam_uuid in carried],
                now,
                list(holders),
                list(holders.values()),
            ],
        )


def _write_portable(
    *, carried: list[tuple[int, str]], holders: dict[int, int], deliveries: Sequence[Delivery],
    now: dt.datetime,
) -> None:
    DeliveryDevice.objects.bulk_create(
        DeliveryDevice(delivery_id=delivery_id, aam_uuid=aam_uuid) for delivery_id, aam_uuid in carried
    )
    # Held by the last delivery carrying it, as on PostgreSQL (deliveries are created in order).
    holder = (
        DeliveryDevice.objects.filter(delivery__in=deliveries, aam_uuid=OuterRef("device_id"))
        .order_by("-delivery_id")
        .values("delivery_id")[:1]
    )
    DestinationDevice.objects.filter(pk__in=list(holders)).update(
        in_flight_delivery_id=Subquery(holder), pending_since=None, left_segment_ids=[], last_sent_at=now
    )
