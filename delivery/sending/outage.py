"""What an outage leaves behind goes out again once the circuit closes (CONTRACT §7: nothing lost).

The deliveries whose failures opened the circuit, and those that fail while it
is open (rounds already in flight, failed probes), end `failed` as any failure
does. `resend_later` makes sure their content is not left behind:

- a real-time destination's real-time deliveries and redeliveries: their
  destination devices are marked pending again, with the pending time of the
  failed request (so the backlog's order keeps them first) and the segments
  they were told they left ("0"), unless the device re-entered them since. The
  claim after the close builds their latest state, merged with whatever
  arrived during the outage;
- a batch delivery (or any delivery of a destination without real-time mode):
  a redelivery of its document, parked (pending, unleased) until the circuit
  closes, when `delivery.leases.take_parked` sends it.

`count_round` is a round's part in the breaker: it counts the round
(`delivery.sending.circuit`) and hands `resend_later` the deliveries of the
failure streak that opened the circuit (`streak_of`), and those that failed
while it was open.
"""

from __future__ import annotations

from collections import defaultdict

import orjson
from django.db.models import QuerySet
from django.utils import timezone

from delivery.models import (
    Delivery,
    DeliveryDevice,
    DeliveryKind,
    DeliveryStatus,
    DestinationDevice,
    Membership,
)
from delivery.sending import circuit
from delivery.sending.attempts import Sending
from delivery.sending.http import HttpResult
from delivery.sending.redaction import redact_credentials, storable_text
from delivery.sending.redelivering import create_redelivery
from destinations.models import Destination, Mapping


def count_round(
    *, destination: Destination, sendings: list[Sending], results: list[HttpResult],
    ended: list[tuple[Sending, DeliveryStatus]], probe: circuit.Probe | None,
) -> None:
    """The circuit breaker's part of a round, in its transaction (`delivery.sending.circuit`).

    Test documents count only as a probe. The failed deliveries of the streak that opened
    the circuit, and those failing while it is open, go out again once it closes.
    """
    now = timezone.now()
    failed = [sending.delivery.pk for sending, status in ended if status == DeliveryStatus.FAILED]
    counted = [(s, r) for s, r in zip(sendings, results, strict=True)
               if probe is not None or s.delivery.kind != DeliveryKind.TEST]
    errors = [storable_text(redact_credentials(r.error, s.credentials))
              for s, r in counted if not r.is_success]
    last_error = errors[-1] if errors else ""
    if probe is not None:
        if not circuit.end_probe(probe=probe, result=results[0], last_error=last_error, now=now):
            resend_later(destination=destination, delivery_ids=failed)
        return
    if not counted:
        return
    count = circuit.count_round(destination=destination, results=[r for _, r in counted],
                                last_error=last_error, now=now)
    if count.opened:
        # The streak's deliveries: at most one per failed attempt of it (a breaker just turned on
        # after a long failing spell does not replay it all: redeliver those by hand).
        attempts = min(destination.consecutive_failures, destination.circuit_failure_threshold + len(counted))
        streak = streak_of(destination=destination, count=attempts)
        resend_later(destination=destination, delivery_ids=streak)
    elif count.is_open and failed:
        resend_later(destination=destination, delivery_ids=failed)



def streak_of(*, destination: Destination, count: int) -> list[int]:
    """The ids of the last `count` failed deliveries (tests aside) since the destination's last success."""
    last_success = (
        Delivery.objects.filter(destination=destination, status=DeliveryStatus.DELIVERED)
        .order_by("-created_at").values_list("finished_at", flat=True).first()
    )
    failed = _failed(destination).order_by("-created_at")
    if last_success is not None:
        failed = failed.filter(finished_at__gt=last_success)
    return list(failed.values_list("pk", flat=True)[:count])


def _failed(destination: Destination) -> QuerySet[Delivery]:
    return Delivery.objects.filter(destination=destination, status=DeliveryStatus.FAILED).exclude(
        kind=DeliveryKind.TEST
    )


def resend_later(*, destination: Destination, delivery_ids: list[int]) -> None:
    """See the module docstring: the failed deliveries' content goes out again after the close."""
    deliveries = list(_failed(destination).filter(pk__in=delivery_ids).order_by("created_at"))
    for delivery in deliveries:
        if destination.realtime and delivery.kind != DeliveryKind.BATCH:
            _mark_pending_again(destination=destination, delivery=delivery)
        elif not delivery.redeliveries.exists():
            create_redelivery(delivery=delivery, leased=False)


def _mark_pending_again(*, destination: Destination, delivery: Delivery) -> None:
    aam_uuids = list(DeliveryDevice.objects.filter(delivery=delivery).values_list("aam_uuid", flat=True))
    left = _still_left(destination=destination, told=_told_left(delivery))
    # Locked in ingestion's order (destination, device), as every writer of these rows. A row locked
    # by another writer is skipped, not waited for (this round holds the destination's row, which
    # such a writer may be waiting for): that writer is claiming the device, ending the request that
    # holds it, or marking it pending, so the device goes out in its latest state either way.
    rows = list(
        DestinationDevice.objects.select_for_update(skip_locked=True)
        .filter(destination=destination, device_id__in=aam_uuids)
        .order_by("destination_id", "device_id")
    )
    for row in rows:
        since = delivery.created_at
        row.pending_since = since if row.pending_since is None else min(row.pending_since, since)
        row.left_segment_ids = sorted({*row.left_segment_ids, *left.get(row.device_id, ())})
    DestinationDevice.objects.bulk_update(rows, ["pending_since", "left_segment_ids"])


def _told_left(delivery: Delivery) -> dict[str, set[str]]:
    """{AAM UUID: the Segment_ID values the document listed as "0"}."""
    document = orjson.loads(bytes(delivery.body))
    told: dict[str, set[str]] = defaultdict(set)
    for user in document.get("Users", []):
        for segment in user.get("Segments", []):
            if segment.get("Status") == "0":
                told[user["AAM_UUID"]].add(segment["Segment_ID"])
    return told


def _still_left(*, destination: Destination, told: dict[str, set[str]]) -> dict[str, set[int]]:
    """The segments each device was told it left and has not re-entered since: still owed as "0"."""
    if not told:
        return {}
    by_value: dict[str, set[int]] = defaultdict(set)
    mappings = Mapping.objects.filter(destination=destination).values_list("segment_id", "value")
    for segment_id, value in mappings:
        by_value[value].add(segment_id)
    wanted = {aam_uuid: {sid for value in values for sid in by_value[value]}
              for aam_uuid, values in told.items()}
    active_rows = Membership.objects.filter(device_id__in=list(wanted), is_active=True)
    active = set(active_rows.values_list("device_id", "segment_id"))
    return {
        aam_uuid: {sid for sid in segment_ids if (aam_uuid, sid) not in active}
        for aam_uuid, segment_ids in wanted.items()
    }
