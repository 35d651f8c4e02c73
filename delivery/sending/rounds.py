"""Sending: sign → post → log, with one retry (CONTRACT §2, §3).

A document is built once (by `delivery.realtime.claiming` or a redelivery) and every
attempt sends the same bytes, signed afresh with the keys in force. Each attempt
round (`delivery.sending.attempts`) posts all of a claim's deliveries concurrently and
writes their `Attempt` rows in bulk; then this module ends the successes and the
last failures, sleeps `retry_delay_ms` once and retries the others.

Ownership: a worker owns a pending delivery while `lease_until` holds the value
it last wrote. Each round renews the lease conditionally on that value, so a
worker whose lease was taken by the reaper (`delivery.leases.reap_expired_deliveries`)
stops instead of sending the same document alongside the new owner.

Warm shutdown (`delivery.shutdown`): an attempt already posted finishes and is
recorded; a delivery that would wait for its retry is handed back instead
(`delivery.leases.hand_back_owned`, and a `send_delivery_task` queued for it), so
that another worker sends it within seconds rather than after its lease.

Failing partners (CONTRACT §7): each round is counted by the circuit breaker in its
transaction (`delivery.sending.circuit.count_round`; a probe's round by `end_probe`),
and a Retry-After holds the destination (`delivery.sending.backoff`). A retry waits
at least until the hold ends; a retry, redelivery or taken-back delivery of a
destination whose circuit is open is parked, like a paused one's, until it closes.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from django.db import transaction
from django.utils import timezone

from delivery.leases import RETRY_WAIT_SLICE_MS, lease_until, park_owned, renew_owned
from delivery.models import Attempt, Delivery, DeliveryKind, DeliveryStatus
from delivery.progress import note_progress
from delivery.sending import backoff, circuit, outage
from delivery.sending.attempts import Sending, make_attempts, record_attempts
from delivery.sending.documents import ACTIVE, SegmentStatus, UserObject, build_document
from delivery.sending.ending import end_deliveries
from delivery.sending.handing_back import hand_back
from delivery.sending.http import HttpResult
from delivery.sending.retry import should_retry
from delivery.shutdown import is_stopping, wait_unless_stopping
from destinations.models import Destination, Mapping

# Re-read before each retry, so that a retry is signed with the keys in force.
AUTH_FIELDS = [
    "auth_mode", "signing_algorithm", "signing_header", "signing_key", "new_signing_key",
    "oauth_token_url", "oauth_client_id", "oauth_client_secret", "oauth_scope", "oauth_client_auth",
]
SAMPLE_SEGMENT_ID = "1"

logger = logging.getLogger("aamdest.delivery")


def send_deliveries(*, destination: Destination, deliveries: list[Delivery], resume: bool = False) -> None:
    """Send `deliveries`, just claimed or created by the caller, until each is delivered or failed.

    Their leases were just set, so the first round does not renew them; each retry does.
    `resume`: stored deliveries that may have attempts already (a batch whose retry was
    parked), numbered on from their last.
    """
    last = _last_attempt_numbers([d.pk for d in deliveries]) if resume else {}
    sendings = [Sending(delivery=d, attempt_number=last.get(d.pk, 0) + 1, lease=d.lease_until)
                for d in deliveries]
    _send_rounds(
        destination=destination, sendings=sendings, max_retries=destination.max_retries, renew_first=False
    )


def send_probe(*, probe: circuit.Probe, delivery: Delivery) -> None:
    """Send a just-claimed delivery as the circuit's probe: one attempt, closing or re-opening it."""
    sending = Sending(delivery=delivery, attempt_number=1, lease=delivery.lease_until)
    _send_rounds(destination=probe.destination, sendings=[sending], max_retries=0, renew_first=False,
                 probe=probe)


def _last_attempt_numbers(delivery_ids: list[int]) -> dict[int, int]:
    numbers = Attempt.objects.filter(delivery_id__in=delivery_ids).values_list("delivery_id", "number")
    last: dict[int, int] = {}
    for delivery_id, number in numbers:
        last[delivery_id] = max(number, last.get(delivery_id, 0))
    return last


def send_delivery(*, delivery_id: int) -> None:
    """Send one pending delivery (a redelivery, or one a dead worker left), resuming its attempts.

    Returns quietly when the delivery is gone or has ended, or when another worker
    took it over since it was read (its lease changed). A delivery that used all its
    attempts without a recorded end gets one more (at least once); one whose last
    attempt succeeded is just marked delivered. While the destination is paused nothing
    is sent: the delivery is parked (`delivery.leases.park_owned`) until it is resumed.
    Callers run one send per delivery at a time (`delivery.tasks.send_delivery_task` guards it).
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
            end_deliveries(destination=destination, ended=[(sending, DeliveryStatus.DELIVERED)])
        return
    if not destination.enabled or circuit.is_blocked(destination, now=timezone.now()):
        _park(sendings=[sending])  # paused, open or held: nothing is sent until that ends
        return
    max_retries = max(destination.max_retries, sending.attempt_number - 1)
    # Renewing first is taking over: a second task for the same delivery then finds it taken.
    _send_rounds(destination=destination, sendings=[sending], max_retries=max_retries, renew_first=True)


def _send_rounds(
    *, destination: Destination, sendings: list[Sending], max_retries: int, renew_first: bool,
    probe: circuit.Probe | None = None,
) -> None:
    """Attempt rounds until each delivery has ended or was taken over by another worker.

    A round: attempt every delivery at once, record the attempts and end the successes
    and the last failures in one transaction, then wait and retry the others.
    """
    if renew_first:
        sendings = _renew_leases(destination=destination, sendings=sendings)
    while sendings:
        results = make_attempts(destination=destination, sendings=sendings)
        ended, retries = _sort_outcomes(sendings=sendings, results=results, max_retries=max_retries)
        with transaction.atomic():
            record_attempts(destination=destination, sendings=sendings, results=results)
            end_deliveries(destination=destination, ended=ended)
            outage.count_round(destination=destination, sendings=sendings, results=results, ended=ended,
                               probe=probe)
        note_progress()
        sendings = _prepare_retries(destination=destination, sendings=retries)


def _sort_outcomes(
    *, sendings: list[Sending], results: list[HttpResult], max_retries: int
) -> tuple[list[tuple[Sending, DeliveryStatus]], list[Sending]]:
    """Split a round's outcomes: (the deliveries that end, with their status; those to retry)."""
    ended, retries = [], []
    for sending, result in zip(sendings, results, strict=True):
        if result.is_success:
            ended.append((sending, DeliveryStatus.DELIVERED))
        elif should_retry(attempt_number=sending.attempt_number, max_retries=max_retries, result=result):
            retries.append(sending)
        else:
            ended.append((sending, DeliveryStatus.FAILED))
    return ended, retries


def _prepare_retries(*, destination: Destination, sendings: list[Sending]) -> list[Sending]:
    """Wait `retry_delay_ms` (or a longer hold), re-read the keys, renew the leases; return the retries.

    A retry whose circuit is open, or that was paused while waiting, is parked: it waits
    for the close or the resume (CONTRACT §2, §7). A hold answered meanwhile is waited out too.
    """
    if not sendings:
        return []
    wait_ms = destination.retry_delay_ms
    while sendings:
        circuit.refresh_circuit(destination)
        if circuit.is_open(destination):
            _park(sendings=sendings)  # the circuit opened: the retry waits for it to close
            return []
        wait_ms = max(wait_ms, backoff.hold_remaining_ms(destination=destination, now=timezone.now()))
        if wait_ms <= 0:
            break
        sendings = _wait_for_retry(destination=destination, sendings=sendings, wait_ms=wait_ms)
        wait_ms = 0  # waited; only a hold answered meanwhile makes it wait again
    destination.refresh_from_db(fields=[*AUTH_FIELDS, "enabled"])
    if not destination.enabled:
        _park(sendings=sendings)  # paused while waiting: the retry waits for the resume
        return []
    for sending in sendings:
        sending.attempt_number += 1
    return _renew_leases(destination=destination, sendings=sendings) if sendings else []


def _wait_for_retry(*, destination: Destination, sendings: list[Sending], wait_ms: int) -> list[Sending]:
    """Sleep `wait_ms` in slices, renewing the leases between them; return those still owned.

    A lease covers one slice (see `lease_until`), so a worker that dies while
    waiting loses its deliveries to the reaper within 60 s whatever the delay.
    A worker shutting down stops waiting and hands them back (`hand_back`).
    """
    remaining_ms = wait_ms
    while sendings and (remaining_ms > 0 or is_stopping()):
        slice_ms = min(remaining_ms, RETRY_WAIT_SLICE_MS)
        if wait_unless_stopping(slice_ms / 1000):
            hand_back(sendings=sendings)
            return []
        note_progress()
        remaining_ms -= slice_ms
        if remaining_ms > 0:
            sendings = _renew_leases(destination=destination, sendings=sendings)
    return sendings


def _renew_leases(*, destination: Destination, sendings: list[Sending]) -> list[Sending]:
    """Extend the lease of the deliveries this worker still owns; return those."""
    leases = {sending.delivery.pk: sending.lease for sending in sendings}
    owned, renewed = renew_owned(destination=destination, leases=leases, now=timezone.now())
    kept = [sending for sending in sendings if sending.delivery.pk in owned]
    for sending in kept:
        sending.lease = sending.delivery.lease_until = renewed
    return kept


def _park(*, sendings: list[Sending]) -> None:
    """Leave these deliveries pending and unleased: `delivery.leases.take_parked` sends them on resume."""
    parked = park_owned({sending.delivery.pk: sending.lease for sending in sendings})
    if parked:
        logger.info("deliveries %s wait for their destination to be resumed", parked)


def send_test_document(*, destination: Destination, probe: circuit.Probe | None = None) -> Delivery:
    """Send one sample document to `destination` now, once, and return the ended delivery (kind `test`).

    The sample device is made up; it lists the destination's active mapped
    segments (or a sample one) as "1". Signed or authenticated like real traffic;
    not retried, so that the caller gets its answer within one deadline. Not counted by the
    circuit breaker, unless it is the circuit's `probe` (nothing else was pending).
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
    _send_rounds(destination=destination, sendings=[sending], max_retries=0, renew_first=False, probe=probe)
    delivery.refresh_from_db()
    return delivery


def active_mapping_values(*, destination: Destination, today: dt.date) -> dict[int, str]:
    """Return {segment ID: value sent as Segment_ID} for the mappings active on `today` (UTC)."""
    mappings = Mapping.objects.filter(destination=destination).active_on(today)
    return dict(mappings.values_list("segment_id", "value"))


def _sample_user(*, destination: Destination, now: dt.datetime) -> UserObject:
    values = active_mapping_values(destination=destination, today=now.astimezone(dt.UTC).date())
    segment_ids = sorted(values.values()) or [SAMPLE_SEGMENT_ID]
    return UserObject(
        aam_uuid=str(uuid.uuid4().int).zfill(38)[:38],  # AAM UUIDs are 38 digits
        partner_uuid="aamdest-test-device",
        regions=[7],
        segments=[SegmentStatus(segment_id, ACTIVE, now) for segment_id in segment_ids],
    )
