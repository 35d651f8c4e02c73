"""The real-time path: from a stored event to the partner's answer, step by step (CONTRACT §2).

1. Event stored: `delivery.intake.membership.apply_events` writes the device's
   memberships and their `MembershipChange` rows.
2. Pending mark: in the same transaction, `delivery.intake.pending_marks.mark_pending`
   sets `DestinationDevice.pending_since` for each destination the change concerns.
3. Flush queued: on commit, `delivery.realtime.scheduling.schedule_flushes` queues
   `delivery.tasks.flush_destination` once per destination (beat's `tick` is the
   safety net for expired waits).
4. Slot: `run_flush` takes one of the destination's concurrency slots
   (`delivery.realtime.slots.holding_slot`), or returns when all are held.
5. Claim: `send_due_requests` calls `delivery.realtime.claiming.claim_due_requests`,
   which locks the due pending devices (`SKIP LOCKED`) and records one pending,
   leased (`delivery.leases.lease_until`) `Delivery` per request.
6. Build document: in that claim, `delivery.realtime.user_objects.build_user_objects`,
   `claiming.pack_requests`, then `delivery.sending.documents.build_document`.
7. Sign / token: `delivery.sending.attempts.make_attempts` adds the headers of
   `auth_headers_for`: an HMAC signature (`destinations.signing`) or a bearer
   token (`delivery.sending.tokens.get_access_token`).
8. POST: `delivery.sending.http.post_many`, all of a claim's requests at once,
   each within the destination's deadline.
9. Attempt rows: `delivery.sending.attempts.record_attempts`.
10. Retry: `delivery.sending.retry.should_retry` decides; the round waits
    `retry_delay_ms` renewing the leases (`delivery.sending.rounds`), then
    signs and posts again.
11. End: `delivery.sending.ending.end_deliveries` marks each delivery delivered
    or failed and frees its devices.
12. Next flush: the slot is renewed and the next claim taken (7-11 again) until
    nothing is due; a full claim calls a helper flush; a flush that lost its
    slot stops claiming. Work not yet due gets a wake-up timer
    (`delivery.realtime.scheduling.schedule_wakeup`).

While the destination's circuit is open, or a Retry-After holds it, nothing is
claimed (CONTRACT §7; `delivery.realtime.probing` sends its probes). After the
circuit closes, the flushes ramp up (`delivery.realtime.slots.ramp_allowance`):
fewer slots and smaller claims, doubling every few seconds.

Redeliveries and deliveries taken back from dead workers skip 1-6:
`send_one_delivery` sends them (steps 7-11) one task at a time. While the
destination is paused they, like a retry it was paused before, wait unleased
(`delivery.leases.park_owned`) until the tick after its resume leases them again.

Warm shutdown (`delivery.shutdown`): a flush claims nothing more and queues a
flush for another worker; a delivery task not yet sending queues itself again.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable

from django.utils import timezone

from delivery.coordination import delete_if_held, scheduling_client, sending_guard_key
from delivery.leases import reap_expired_deliveries
from delivery.models import Delivery
from delivery.realtime.claiming import claim_due_requests
from delivery.realtime.scheduling import mark_flush_started, schedule_flushes, schedule_wakeup
from delivery.realtime.slots import holding_slot, ramp_allowance, slot_expiry_ms
from delivery.sending.handing_back import queue_sends
from delivery.sending.rounds import send_deliveries, send_delivery
from delivery.shutdown import is_stopping
from destinations.models import Destination

logger = logging.getLogger("aamdest.delivery")

# How many requests one claim takes: enough to amortise its queries, few enough
# that one worker does not hog a destination's whole backlog.
CLAIM_MAX_REQUESTS = 25


def run_flush(*, destination_id: int) -> None:
    """Send the destination's due real-time requests, within one of its concurrency slots."""
    mark_flush_started(destination_id)
    destination = Destination.objects.filter(pk=destination_id).first()
    if destination is None:
        return
    if not is_stopping():
        allowance = ramp_allowance(destination_id=destination_id)
        # During a ramp: one slot per full claim's worth of the allowance (at least one).
        slot_count = None if allowance is None else max(1, allowance // CLAIM_MAX_REQUESTS)
        expiry_ms = slot_expiry_ms(destination)
        with holding_slot(destination_id=destination_id, expiry_ms=expiry_ms, slot_count=slot_count) as renew:
            if renew is None:
                return  # every slot is held: the holders drain the destination and look again when done
            send_due_requests(
                destination=destination,
                max_requests=CLAIM_MAX_REQUESTS,
                keep_slot=renew,
                call_help=lambda: schedule_flushes({destination_id}),
                ramped=True,
            )
    if is_stopping():
        schedule_flushes({destination_id})  # this worker is shutting down: another one goes on
        return
    schedule_wakeup(destination)


def send_due_requests(
    *,
    destination: Destination,
    max_requests: int,
    keep_slot: Callable[[], bool] | None = None,
    call_help: Callable[[], object] | None = None,
    ramped: bool = False,
) -> int:
    """Claim and send `destination`'s due requests until none is due; return how many were sent.

    After each claim is sent, `keep_slot` renews the caller's concurrency slot; when
    it returns False (the slot was lost) no further request is claimed. A full claim
    (`max_requests`) runs `call_help` first: more is probably due, and another flush
    may claim in parallel while this one waits for the partner. Settings and pauses
    take effect between claims. `ramped`: while the destination's ramp lasts, a claim
    takes at most its allowance of requests.
    """
    sent = 0
    while not is_stopping():
        now = timezone.now()
        allowance = ramp_allowance(destination_id=destination.pk) if ramped else None
        limit = max_requests if allowance is None else min(max_requests, allowance)
        deliveries = claim_due_requests(destination=destination, now=now, max_requests=limit)
        if not deliveries:
            return sent
        if call_help is not None and len(deliveries) == max_requests:
            call_help()
        send_deliveries(destination=destination, deliveries=deliveries)
        sent += len(deliveries)
        if keep_slot is not None and not keep_slot():
            logger.warning("destination %s: the flush lost its concurrency slot and stops", destination.pk)
            return sent
        try:
            destination.refresh_from_db()
        except Destination.DoesNotExist:
            return sent
    return sent


def send_one_delivery(*, delivery_id: int) -> None:
    """Send one pending delivery (a redelivery, or one whose worker died), then wake its destination.

    One task at a time per delivery: a duplicate task (the reaper and a redelivery
    racing, a broker redelivery) returns at once instead of sending alongside.
    """
    if is_stopping():
        queue_sends([delivery_id])  # this worker is shutting down: another one sends it
        return
    delivery = Delivery.objects.filter(pk=delivery_id).select_related("destination").first()
    if delivery is None:
        return
    guard, owner = sending_guard_key(delivery_id), uuid.uuid4().hex
    if not scheduling_client().set(guard, owner, nx=True, px=slot_expiry_ms(delivery.destination)):
        return  # if that task's worker dies, the reaper takes the delivery and the guard back
    try:
        send_delivery(delivery_id=delivery_id)
    finally:
        # Only our own guard: the reaper may have dropped it and a new task taken it since.
        delete_if_held(scheduling_client(), key=guard, holder=owner)
    # Its devices are free again: changes that waited for it may now go.
    schedule_flushes({delivery.destination_id})


def take_back_expired(*, now: dt.datetime) -> list[int]:
    """Take back the pending deliveries whose worker died (`reap_expired_deliveries`); return their ids.

    Their sending guards go with them: a passed lease proves that the task holding the
    guard is gone (a live one renews its lease), and the guard would otherwise hold the
    delivery back for up to `slot_expiry_ms` (550 s at the largest settings), past
    CONTRACT §2's 60 s. Send each with `send_one_delivery`.
    """
    taken = reap_expired_deliveries(now=now)
    if taken:
        scheduling_client().delete(*(sending_guard_key(delivery_id) for delivery_id in taken))
    return taken

