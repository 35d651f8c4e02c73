"""Delivery-log retention (CONTRACT §5): delivery records are kept `AAMDEST_DELIVERY_LOG_DAYS` days.

Deliveries created before the horizon that have ended are deleted with their
attempts and device rows, `CHUNK_SIZE` at a time (one short transaction each),
so that pruning months of a busy log never holds long locks or loads bodies.
Pending deliveries are kept whatever their age: they are still to be sent.
A redelivery of a pruned delivery keeps its document; its `redelivery_of`
becomes null.
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction

from delivery.models import Delivery, DeliveryStatus

CHUNK_SIZE = 5_000


def prune_delivery_log(*, now: dt.datetime, days: int, chunk_size: int = CHUNK_SIZE) -> int:
    """Delete the ended deliveries created more than `days` days before `now`; return how many."""
    horizon = now - dt.timedelta(days=days)
    old = Delivery.objects.filter(created_at__lt=horizon).exclude(status=DeliveryStatus.PENDING)
    pruned = 0
    while True:
        with transaction.atomic():
            pks = list(old.order_by("created_at", "pk").select_for_update(skip_locked=True)
                       .values_list("pk", flat=True)[:chunk_size])
            if not pks:
                return pruned
            _delete_deliveries(pks)
        pruned += len(pks)
        if len(pks) < chunk_size:
            return pruned


def _delete_deliveries(pks: list[int]) -> None:
    # only("pk"): Django's collector loads the rows it deletes; never the bodies. Attempts,
    # device rows and batch exits go with them; redeliveries and in-flight marks are set null.
    Delivery.objects.filter(pk__in=pks).only("pk").delete()
