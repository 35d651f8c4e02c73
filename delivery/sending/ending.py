"""Ending deliveries: the successes and the last failures of a round, if this worker still owns them.

A delivery ends once: it becomes `delivered` or `failed`, loses its lease and
frees the devices it held (`DestinationDevice.in_flight_delivery`; a split
device passes to its piece still pending, if any), and the
destination notes its latest outcome. Only the deliveries still owned are ended
(`delivery.leases`): one taken over meanwhile belongs to its new worker.
"""

from __future__ import annotations

import datetime as dt
import functools

from django.db import transaction
from django.db.models import Min, OuterRef, Subquery
from django.utils import timezone

from delivery import counters, dialect
from delivery.leases import lock_owned
from delivery.models import Delivery, DeliveryDevice, DeliveryKind, DeliveryStatus, DestinationDevice
from delivery.sending.attempts import Sending
from destinations.models import Destination


def _lock_owned(sendings: list[Sending]) -> list[int]:
    """Lock the deliveries this worker still owns (`delivery.leases.lock_owned`); return their ids."""
    return lock_owned({sending.delivery.pk: sending.lease for sending in sendings})


def end_deliveries(*, destination: Destination, ended: list[tuple[Sending, DeliveryStatus]]) -> None:
    """End the deliveries this worker still owns, free their devices, note the latest outcome.

    On PostgreSQL a round's ends take three statements whatever their number: the
    deliveries' conditional UPDATE, the devices' UPDATE (locked in ingestion's order,
    destination then device, so that the two never deadlock), and the destination's
    latest outcome, written once per round (a failure wins over a success).
    """
    if not ended:
        return
    now = timezone.now()
    # Inside the round's transaction (no savepoint needed), or a transaction of its own.
    with transaction.atomic(savepoint=False):
        if dialect.is_postgresql():
            owned = _end_postgresql(destination_id=destination.pk, ended=ended, now=now)
        else:
            owned = {}
            for status in (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED):
                sendings = [sending for sending, end_status in ended if end_status == status]
                owned.update(dict.fromkeys(_end_portable(sendings=sendings, status=status, now=now), status))
        if owned:
            failed = DeliveryStatus.FAILED in owned.values()
            latest = DeliveryStatus.FAILED if failed else DeliveryStatus.DELIVERED
            Destination.objects.filter(pk=destination.pk).update(
                last_delivery_status=latest, last_delivery_at=now
            )
            # The /metrics totals count the ends that committed, once each.
            outcomes = [str(status) for status in owned.values()]
            transaction.on_commit(functools.partial(
                counters.count_finished_deliveries, destination_id=destination.pk, outcomes=outcomes
            ))
    for sending, _status in ended:
        if sending.delivery.pk in owned:
            sending.delivery.status, sending.delivery.finished_at = owned[sending.delivery.pk], now


# A split device's other pieces (`_next_piece`): the destination's real-time requests still pending,
# the ending ones no longer among them. Read once per statement (MATERIALIZED: inlined, PostgreSQL
# read them again for each held row), then matched per held device through the (delivery, aam_uuid)
# unique index. A subquery joining `Delivery` per held row scanned every pending delivery each time.
_PIECES_SQL = f"""pieces AS MATERIALIZED (
    SELECT coalesce(array_agg(id), '{{}}') AS ids FROM {Delivery._meta.db_table}
    WHERE status = %s AND kind = %s AND destination_id = %s
)"""  # noqa: S608 - table names from the models


def _end_postgresql(
    *, destination_id: int, ended: list[tuple[Sending, DeliveryStatus]], now: dt.datetime
) -> dict[int, str]:
    deliveries = Delivery._meta.db_table
    with dialect.server_side_cursor() as cursor:
        # Owned: still pending with the lease this worker last wrote (re-checked on the row's latest version).
        cursor.execute(
            f"""
            UPDATE {deliveries} AS d SET status = e.status, finished_at = %s, lease_until = NULL
            FROM unnest(%b::bigint[], %b::timestamptz[], %b::text[]) AS e(id, lease, status)
            WHERE d.id = e.id AND d.status = %s AND d.lease_until IS NOT DISTINCT FROM e.lease
            RETURNING d.id, d.status
            """,  # noqa: S608 - table names from the models
            [
                now,
                [sending.delivery.pk for sending, _ in ended],
                [sending.lease for sending, _ in ended],
                [str(status) for _, status in ended],
                DeliveryStatus.PENDING.value,
            ],
        )
        owned = dict(cursor.fetchall())
    if owned:
        _free_held_postgresql(destination_id=destination_id, owned=owned, now=now)
    return owned


def _free_held_postgresql(*, destination_id: int, owned: dict[int, str], now: dt.datetime) -> None:
    """Free the devices the ended deliveries held (to a split device's next piece, if any)."""
    destination_devices, carried = DestinationDevice._meta.db_table, DeliveryDevice._meta.db_table
    delivered = [pk for pk, status in owned.items() if status == DeliveryStatus.DELIVERED]
    with dialect.server_side_cursor() as cursor:
        cursor.execute(
            f"""
            WITH held AS (
                SELECT id, device_id, in_flight_delivery_id = ANY(%b::bigint[]) AS delivered
                FROM {destination_devices} WHERE in_flight_delivery_id = ANY(%b::bigint[])
                ORDER BY destination_id, device_id
                FOR UPDATE
            ), {_PIECES_SQL}
            UPDATE {destination_devices} AS s
            SET in_flight_delivery_id = (
                    SELECT min(c.delivery_id) FROM {carried} c
                    WHERE c.delivery_id = ANY(pieces.ids) AND c.aam_uuid = held.device_id
                ),
                last_sent_at = CASE WHEN held.delivered THEN %s ELSE s.last_sent_at END
            FROM held, pieces
            WHERE s.id = held.id
            """,  # noqa: S608 - table names from the models
            [delivered, list(owned), DeliveryStatus.PENDING.value, DeliveryKind.REALTIME.value,
             destination_id, now],
        )


def _end_portable(*, sendings: list[Sending], status: DeliveryStatus, now: dt.datetime) -> list[int]:
    if not sendings:
        return []
    owned = _lock_owned(sendings)
    Delivery.objects.filter(pk__in=owned).update(status=status, finished_at=now, lease_until=None)
    # Locked in ingestion's order (destination, device), so that the two never deadlock.
    held_pks = (
        DestinationDevice.objects.select_for_update()
        .filter(in_flight_delivery_id__in=owned)
        .order_by("destination_id", "device_id")
        .values_list("pk", flat=True)
    )
    held = DestinationDevice.objects.filter(pk__in=list(held_pks))
    if status == DeliveryStatus.DELIVERED:
        held.update(in_flight_delivery=_next_piece(), last_sent_at=now)
    else:
        held.update(in_flight_delivery=_next_piece())
    return owned


def _next_piece() -> Subquery:
    """The device's other real-time request still pending (a split device's piece), which holds it on."""
    pieces = (
        DeliveryDevice.objects.filter(
            aam_uuid=OuterRef("device_id"),
            delivery__destination_id=OuterRef("destination_id"),
            delivery__status=DeliveryStatus.PENDING,
            delivery__kind=DeliveryKind.REALTIME,
        )
        .values("aam_uuid")
        .annotate(first=Min("delivery_id"))
        .values("first")
    )
    return Subquery(pieces)
