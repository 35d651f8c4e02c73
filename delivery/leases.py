"""Leases: which worker owns a pending delivery, and until when (CONTRACT §2, at least once).

A worker owns a pending delivery while its `lease_until` holds the value that
worker last wrote. The rules, all here:

- how long: `lease_until` covers one attempt round and at most one slice of the
  retry wait (`RETRY_WAIT_SLICE_MS`), plus a margin;
- taking: a claim sets the lease of the deliveries it creates
  (`delivery.realtime.claiming`), and `take_unleased` leases stored ones (batch);
- renewing: conditional on the value last written (`renew_owned`), so a worker
  whose delivery was taken back stops instead of sending alongside the new owner;
- checking: `lock_owned` locks the deliveries still owned before they are ended;
- taking back: `reap_expired_deliveries` re-leases those whose worker died;
- handing back: a worker shutting down sets the lease it owns to lapse now
  (`hand_back_owned`), so that the next reaping takes the delivery at once;
- parking: while its destination is paused a delivery waits unleased (`park_owned`:
  `lease_until` null, so the reaper leaves it alone), until `take_parked` leases it
  again once the destination is resumed. (A stored batch delivery is unleased too:
  the batch drain takes those, `take_parked` leaves them.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from django.db import transaction
from django.db.models import Q, QuerySet

from delivery.models import Delivery, DeliveryKind, DeliveryStatus
from destinations.models import CircuitState, Destination

# A live worker renews its lease at every attempt round; this margin covers the
# database writes around the HTTP exchange, so only a dead worker's lease passes.
LEASE_MARGIN = dt.timedelta(seconds=10)
# The longest retry wait one lease covers: 30 s timeout + 15 s + 10 s margin < 60 s.
RETRY_WAIT_SLICE_MS = 15_000
# How many expired deliveries one reaping takes back.
REAP_BATCH = 100


def lease_until(*, destination: Destination, now: dt.datetime) -> dt.datetime:
    """Return until when a worker owns one attempt round of a delivery to `destination`.

    One attempt plus at most one slice of the retry wait (the sender renews the
    lease before each further slice), so that even at the largest settings a dead
    worker's delivery is taken back well within CONTRACT §2's 60 seconds.
    """
    round_ms = destination.timeout_ms + min(destination.retry_delay_ms, RETRY_WAIT_SLICE_MS)
    return now + dt.timedelta(milliseconds=round_ms) + LEASE_MARGIN


def lock_owned(leases: Mapping[int, dt.datetime | None]) -> list[int]:
    """Lock the deliveries still pending with the lease this worker last wrote; return their ids.

    `leases`: {delivery id: the lease this worker last wrote}. Call inside a
    transaction: the locks hold until it ends.
    """
    current = Delivery.objects.select_for_update().filter(pk__in=leases, status=DeliveryStatus.PENDING)
    return [pk for pk, lease in current.values_list("pk", "lease_until") if lease == leases[pk]]


def renew_owned(
    *, destination: Destination, leases: Mapping[int, dt.datetime | None], now: dt.datetime
) -> tuple[list[int], dt.datetime]:
    """Extend the lease of the deliveries this worker still owns; return (their ids, the new lease)."""
    renewed = lease_until(destination=destination, now=now)
    with transaction.atomic():
        owned = lock_owned(leases)
        Delivery.objects.filter(pk__in=owned).update(lease_until=renewed)
    return owned, renewed


def take_unleased(*, destination: Destination, deliveries: QuerySet[Delivery], now: dt.datetime,
                  count: int) -> list[int]:
    """Lease up to `count` of `deliveries` that nobody leased yet, in `pk` order; return their ids.

    Rows locked by a concurrent taker are skipped (`SKIP LOCKED`), so two takers never
    lease the same delivery.
    """
    with transaction.atomic():
        pks = list(
            deliveries.filter(status=DeliveryStatus.PENDING, lease_until__isnull=True)
            .order_by("pk")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:count]
        )
        Delivery.objects.filter(pk__in=pks).update(lease_until=lease_until(destination=destination, now=now))
    return pks


def reap_expired_deliveries(*, now: dt.datetime) -> list[int]:
    """Take over pending deliveries whose lease passed (their worker died); return their ids.

    Each is taken with a conditional UPDATE, so that two reapers never both
    re-send one delivery; the caller sends each with `delivery.sending.rounds.send_delivery`.
    """
    expired = Delivery.objects.filter(status=DeliveryStatus.PENDING, lease_until__lt=now).select_related(
        "destination"
    )
    taken = []
    for delivery in expired.order_by("lease_until")[:REAP_BATCH]:
        renewed = lease_until(destination=delivery.destination, now=now)
        still_expired = Delivery.objects.filter(
            pk=delivery.pk, status=DeliveryStatus.PENDING, lease_until=delivery.lease_until
        )
        if still_expired.update(lease_until=renewed):
            taken.append(delivery.pk)
    return taken


def hand_back_owned(leases: Mapping[int, dt.datetime | None], *, now: dt.datetime) -> list[int]:
    """Let the deliveries this worker still owns be taken back at once; return their ids.

    `leases`: {delivery id: the lease this worker last wrote}. Their lease is set
    to `now`, so it has lapsed for the next reaping (or a `send_delivery` task),
    which takes them with the usual conditional update: never two senders.
    """
    with transaction.atomic():
        owned = lock_owned(leases)
        Delivery.objects.filter(pk__in=owned).update(lease_until=now)
    return owned


def park_owned(leases: Mapping[int, dt.datetime | None]) -> list[int]:
    """Leave the deliveries this worker still owns unleased until their destination resumes; return them.

    `leases`: {delivery id: the lease this worker last wrote}.
    """
    with transaction.atomic():
        owned = lock_owned(leases)
        Delivery.objects.filter(pk__in=owned).update(lease_until=None)
    return owned


def take_parked(*, now: dt.datetime) -> list[int]:
    """Lease the parked deliveries of enabled (resumed) destinations; return their ids, to be sent.

    Not those of a destination whose circuit is open or that a Retry-After holds (CONTRACT §7):
    they wait for the close, or the hold's end. Rows locked by a concurrent taker are skipped,
    so two takers never lease the same delivery.
    """
    not_held = Q(destination__hold_until__isnull=True) | Q(destination__hold_until__lte=now)
    with transaction.atomic():
        parked = (
            Delivery.objects.filter(not_held, status=DeliveryStatus.PENDING, lease_until__isnull=True,
                                    destination__enabled=True,
                                    destination__circuit_state=CircuitState.CLOSED)
            .exclude(kind=DeliveryKind.BATCH)
            .select_related("destination")
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("pk")[:REAP_BATCH]
        )
        taken = []
        for delivery in parked:
            Delivery.objects.filter(pk=delivery.pk).update(
                lease_until=lease_until(destination=delivery.destination, now=now)
            )
            taken.append(delivery.pk)
    return taken
