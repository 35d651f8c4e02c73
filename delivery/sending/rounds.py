"""Sending: sign → post → log, with one retry (SPEC §2, §3).

A document is built once (by `delivery.realtime.claiming` or a redelivery) and every
attempt sends the same bytes, signed afresh with the keys in force. Each attempt
round (`delivery.sending.attempts`) posts all of a claim's deliveries concurrently and
writes their `Attempt` rows in bulk; then this module ends the successes and the
last failures, sleeps `retry_delay_ms` once and retries the others.

Ownership: a worker owns a pending delivery while `lease_until` holds the value
it last wrote. Each round renews the lease conditionally on that value, so a
worker whose lease was taken by the reaper (`reap_expired_deliveries`) stops
instead of sending the same document alongside the new owner.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable

from django.db import connection, transaction
from django.utils import timezone

from delivery import dialect
from delivery.models import Delivery, DeliveryDevice, DeliveryKind, DeliveryStatus, DestinationDevice
from delivery.realtime.claiming import (
    RETRY_WAIT_SLICE_MS,
    active_mapping_values,
    claim_due_requests,
    lease_until,
)
from delivery.sending.attempts import Sending, make_attempts, record_attempts
from delivery.sending.documents import ACTIVE, SegmentStatus, UserObject, build_document
from delivery.sending.retry import should_retry
from destinations.models import Destination

# Re-read before each retry, so that a retry is signed with the keys in force.
AUTH_FIELDS = [
    "auth_mode", "signing_algorithm", "signing_header", "signing_key", "new_signing_key",
    "oauth_token_url", "oauth_client_id", "oauth_client_secret", "oauth_scope", "oauth_client_auth",
]
REAP_BATCH = 100
SAMPLE_SEGMENT_ID = "1"


class RedeliveryConflict(Exception):
    """The original delivery is still pending: redeliver it once it has ended (HTTP 409)."""


def send_due_requests(
    *,
    destination: Destination,
    max_requests: int,
    before_sending: Callable[[list[Delivery]], object] | None = None,
) -> int:
    """Claim and send `destination`'s due requests until none is due; return how many were sent.

    `before_sending` runs after each claim, before its requests go (the caller
    renews its concurrency slot and may wake helpers there). Settings and pauses
    take effect between claims.
    """
    sent = 0
    while True:
        now = timezone.now()
        deliveries = claim_due_requests(destination=destination, now=now, max_requests=max_requests)
        if not deliveries:
            return sent
        if before_sending is not None:
            before_sending(deliveries)
        send_deliveries(destination=destination, deliveries=deliveries)
        sent += len(deliveries)
        try:
            destination.refresh_from_db()
        except Destination.DoesNotExist:
            return sent


def send_deliveries(*, destination: Destination, deliveries: list[Delivery]) -> None:
    """Send `deliveries`, just claimed or created by the caller, until each is delivered or failed.

    Their leases were just set, so the first round does not renew them; each retry does.
    """
    sendings = [Sending(delivery=d, attempt_number=1, lease=d.lease_until) for d in deliveries]
    _send_rounds(
        destination=destination, sendings=sendings, max_retries=destination.max_retries, renew_first=False
    )


def send_delivery(*, delivery_id: int) -> None:
    """Send one pending delivery (a redelivery, or one a dead worker left), resuming its attempts.

    Returns quietly when the delivery is gone or has ended, or when another worker
    took it over since it was read (its lease changed). A delivery that used all its
    attempts without a recorded end gets one more (at least once); one whose last
    attempt succeeded is just marked delivered. Callers run one send per delivery
    at a time (`delivery.tasks.send_delivery_task` guards it).
    """
    delivery = Delivery.objects.select_related("destination").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != DeliveryStatus.PENDING:
        return
    destination = delivery.destination
    last = delivery.attempts.order_by("-number").first()
    next_number = last.number + 1 if last else 1
    sending = Sending(delivery=delivery, attempt_number=next_number, lease=delivery.lease_until)
    if last is not None and last.status_code == 200 and last.reason is None:
        if _renew_leases(destination=destination, sendings=[sending]):
            _end(destination=destination, ended=[(sending, DeliveryStatus.DELIVERED)])
        return
    max_retries = max(destination.max_retries, sending.attempt_number - 1)
    # Renewing first is taking over: a second task for the same delivery then finds it taken.
    _send_rounds(destination=destination, sendings=[sending], max_retries=max_retries, renew_first=True)


def _send_rounds(
    *, destination: Destination, sendings: list[Sending], max_retries: int, renew_first: bool
) -> None:
    must_renew = renew_first
    while sendings:
        if must_renew:
            sendings = _renew_leases(destination=destination, sendings=sendings)
            if not sendings:
                return
        must_renew = True
        results = make_attempts(destination=destination, sendings=sendings)
        retries, ended = [], []
        for sending, result in zip(sendings, results, strict=True):
            if result.is_success:
                ended.append((sending, DeliveryStatus.DELIVERED))
            elif should_retry(attempt_number=sending.attempt_number, max_retries=max_retries, result=result):
                retries.append(sending)
            else:
                ended.append((sending, DeliveryStatus.FAILED))
        # One transaction per round: its Attempt rows and the ends it makes.
        with transaction.atomic():
            record_attempts(destination=destination, sendings=sendings, results=results)
            _end(destination=destination, ended=ended)
        if retries:
            retries = _wait_for_retry(destination=destination, sendings=retries)
            destination.refresh_from_db(fields=AUTH_FIELDS)
        for sending in retries:
            sending.attempt_number += 1
        sendings = retries


def _wait_for_retry(*, destination: Destination, sendings: list[Sending]) -> list[Sending]:
    """Sleep `retry_delay_ms` in slices, renewing the leases between them; return those still owned.

    A lease covers one slice (see `lease_until`), so a worker that dies while
    waiting loses its deliveries to the reaper within 60 s whatever the delay.
    """
    remaining_ms = destination.retry_delay_ms
    while sendings and remaining_ms > 0:
        slice_ms = min(remaining_ms, RETRY_WAIT_SLICE_MS)
        time.sleep(slice_ms / 1000)
        remaining_ms -= slice_ms
        if remaining_ms > 0:
            sendings = _renew_leases(destination=destination, sendings=sendings)
    return sendings


def _renew_leases(*, destination: Destination, sendings: list[Sending]) -> list[Sending]:
    """Extend the lease of the deliveries this worker still owns; return those."""
    now = timezone.now()
    renewed = lease_until(destination=destination, now=now)
    with transaction.atomic():
        owned = _lock_owned(sendings)
        Delivery.objects.filter(pk__in=owned).update(lease_until=renewed)
    kept = [sending for sending in sendings if sending.delivery.pk in owned]
    for sending in kept:
        sending.lease = sending.delivery.lease_until = renewed
    return kept


def _lock_owned(sendings: list[Sending]) -> list[int]:
    """Lock the deliveries still pending with the lease this worker last wrote; return their ids.

    Call inside a transaction: the locks hold until it ends.
    """
    leases = {sending.delivery.pk: sending.lease for sending in sendings}
    current = Delivery.objects.select_for_update().filter(pk__in=leases, status=DeliveryStatus.PENDING)
    return [pk for pk, lease in current.values_list("pk", "lease_until") if lease == leases[pk]]


def _end(*, destination: Destination, ended: list[tuple[Sending, DeliveryStatus]]) -> None:
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
            owned = _end_postgresql(ended=ended, now=now)
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
    for sending, _status in ended:
        if sending.delivery.pk in owned:
            sending.delivery.status, sending.delivery.finished_at = owned[sending.delivery.pk], now


def _end_postgresql(*, ended: list[tuple[Sending, DeliveryStatus]], now: dt.datetime) -> dict[int, str]:
    deliveries, states = Delivery._meta.db_table, DestinationDevice._meta.db_table
    with connection.cursor() as cursor:
        # Owned: still pending with the lease this worker last wrote (re-checked on the row's latest version).
        cursor.execute(
            f"""
            UPDATE {deliveries} AS d SET status = e.status, finished_at = %s, lease_until = NULL
            FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[]) AS e(id, lease, status)
            WHERE d.id = e.id AND d.status = %s AND d.lease_until IS NOT DISTINCT FROM e.lease
            RETURNING d.id, d.status
            """,  # noqa: S608 - table names from the models
            [
                now,
                [sending.delivery.pk for sending, _ in ended],
                [sending.lease for sending, _ in ended],
                [str(status) for _, status in ended],
                DeliveryStatus.PENDING,
            ],
        )
        owned = dict(cursor.fetchall())
        if owned:
            delivered = [pk for pk, status in owned.items() if status == DeliveryStatus.DELIVERED]
            cursor.execute(
                f"""
                UPDATE {states} AS s
                SET in_flight_delivery_id = NULL,
                    last_sent_at = CASE WHEN held.delivered THEN %s ELSE s.last_sent_at END
                FROM (
                    SELECT id, in_flight_delivery_id = ANY(%s::bigint[]) AS delivered FROM {states}
                    WHERE in_flight_delivery_id = ANY(%s::bigint[])
                    ORDER BY destination_id, device_id
                    FOR UPDATE
                ) AS held
                WHERE s.id = held.id
                """,  # noqa: S608 - table names from the models
                [now, delivered, list(owned)],
            )
    return owned


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
        held.update(in_flight_delivery=None, last_sent_at=now)
    else:
        held.update(in_flight_delivery=None)
    return owned


def reap_expired_deliveries(*, now: dt.datetime) -> list[int]:
    """Take over pending deliveries whose lease passed (their worker died); return their ids.

    Each is taken with a conditional UPDATE, so that two reapers never both
    re-send one delivery; the caller sends each with `send_delivery`.
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


def create_redelivery(*, delivery: Delivery) -> Delivery:
    """Create a pending redelivery of `delivery`: the same bytes and document ID, kind `redelivery`.

    Raises RedeliveryConflict while `delivery` is pending. The caller enqueues
    `delivery.tasks.send_delivery_task` on commit; should that be lost, the lease
    set here lets the reaper send it.
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
            lease_until=lease_until(destination=original.destination, now=timezone.now()),
        )
        aam_uuids = original.devices.values_list("aam_uuid", flat=True)
        DeliveryDevice.objects.bulk_create(DeliveryDevice(delivery=redelivery, aam_uuid=a) for a in aam_uuids)
    return redelivery


def send_test_document(*, destination: Destination) -> Delivery:
    """Send one sample document to `destination` now, once, and return the ended delivery (kind `test`).

    The sample device is made up; it lists the destination's active mapped
    segments (or a sample one) as "1". Signed or authenticated like real traffic;
    not retried, so that the caller gets its answer within one deadline.
    """
    now = timezone.now()
    delivery = Delivery.objects.create(
        destination=destination,
        kind=DeliveryKind.TEST,
        body=build_document(
            user_dpid=destination.user_dpid,
            client_id=destination.client_id,
            aam_destination_id=destination.aam_destination_id,
            users=[_sample_user(destination=destination, now=now)],
            process_time=now,
        ),
        user_count=1,
        lease_until=lease_until(destination=destination, now=now),
    )
    sending = Sending(delivery=delivery, attempt_number=1, lease=delivery.lease_until)
    _send_rounds(destination=destination, sendings=[sending], max_retries=0, renew_first=False)
    delivery.refresh_from_db()
    return delivery


def _sample_user(*, destination: Destination, now: dt.datetime) -> UserObject:
    values = active_mapping_values(destination=destination, today=now.astimezone(dt.UTC).date())
    segment_ids = sorted(values.values()) or [SAMPLE_SEGMENT_ID]
    return UserObject(
        aam_uuid=str(uuid.uuid4().int).zfill(38)[:38],  # AAM UUIDs are 38 digits
        partner_uuid="aamdest-test-device",
        regions=[7],
        segments=[SegmentStatus(segment_id, ACTIVE, now) for segment_id in segment_ids],
    )
