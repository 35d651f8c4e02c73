"""The operator actions on the delivery log, one service each, whichever door the operator used.

The API (`delivery.api.deliveries`), the admin (`delivery.admin`) and the console
(`delivery.console.actions`) only translate input and these results:

- `redeliver`: a new delivery of kind `redelivery` carrying the same document; raises
  `RedeliveryConflict` (the API's 409) while the original is pending.
- `redeliver_failed_since`: `redeliver` for each failed delivery of a destination since a
  time, once per document.
- `resync`: queue a fresh full-state real-time send of a destination's devices (CONTRACT §7);
  raises `ResyncRefused` (the API's 400/409) or `ResyncNotQueued` (503).
- `close_circuit`: close a destination's open circuit by hand (CONTRACT §7); raises
  `CircuitAlreadyClosed` (the API's 409) when it is closed. The change log records it
  (`circuit_closed`, the operator and the door), and the destination's backlog drains
  with the concurrency ramp, as after a probe's 200.

The delivery log itself is the record of the redeliveries: each names the delivery it repeats
(`redelivery_of`), and no configuration change is recorded. A resync is recorded in the change
log (`ChangeAction.RESYNC`, with its scope), as it sends to a partner what nobody asked for.

The operator actions on a destination (pause, test, send the batch now…) are in
`destinations.services`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from kombu.exceptions import OperationalError

from delivery import tasks
from delivery.models import Delivery, DeliveryStatus
from delivery.realtime.probing import wake_after_close
from delivery.realtime.resync import count_resync_devices
from delivery.sending import circuit
from delivery.sending.redelivering import RedeliveryConflict, create_redelivery
from destinations.audit import record_change
from destinations.models import ChangeAction, Destination

__all__ = [
    "CircuitAlreadyClosed",
    "RedeliveryConflict",
    "RedeliveryReport",
    "ResyncNotQueued",
    "ResyncRefused",
    "close_circuit",
    "failed_since",
    "redeliver",
    "redeliver_failed_since",
    "resync",
]

logger = logging.getLogger(__name__)


class CircuitAlreadyClosed(Exception):
    """The destination's circuit is closed already: there is nothing to close (HTTP 409)."""


@dataclass(frozen=True)
class RedeliveryReport:
    """What `redeliver_failed_since` did: the redeliveries queued and the deliveries it skipped."""

    queued: list[Delivery]
    skipped: int


def redeliver(*, delivery: Delivery) -> Delivery:
    """Create a redelivery of `delivery` and queue its sending once committed; return it.

    Raises `RedeliveryConflict` while `delivery` is pending. The enqueue is robust: with the
    broker down the redelivery still stands, and its lease lets the reaper send it. While the
    destination is paused the redelivery is created but waits for the resume.
    """
    with transaction.atomic():
        new = create_redelivery(delivery=delivery)
        transaction.on_commit(lambda: tasks.send_delivery_task.delay(new.pk), robust=True)
    return new


def redeliver_failed_since(*, destination: Destination, since: dt.datetime) -> RedeliveryReport:
    """Redeliver each failed delivery of `destination` created since `since`, once per document.

    A delivery another operator redelivers meanwhile (it became pending) is skipped, not an error.
    """
    queued: list[Delivery] = []
    skipped = 0
    for delivery in failed_since(destination_id=destination.pk, since=since):
        try:
            queued.append(redeliver(delivery=delivery))
        except RedeliveryConflict:
            skipped += 1
    return RedeliveryReport(queued=queued, skipped=skipped)


def failed_since(*, destination_id: int, since: dt.datetime) -> QuerySet[Delivery]:
    """Failed deliveries created since `since` whose document has not been redelivered yet.

    A failed delivery that already has a redelivery is left out: the latest link of the chain
    stands for the document, so that one press sends each document once.
    """
    return Delivery.objects.filter(
        destination_id=destination_id, status=DeliveryStatus.FAILED, created_at__gte=since,
        redeliveries__isnull=True,
    ).order_by("created_at")


def close_circuit(
    *, destination: Destination, actor: AbstractBaseUser | AnonymousUser | None, source: str
) -> Destination:
    """Close `destination`'s open (or probing) circuit now, record who did it, wake its backlog.

    Raises `CircuitAlreadyClosed` when it is closed; nothing is recorded then. Returns the
    destination as it stands after the close. A probe in flight meanwhile finds the
    circuit closed and leaves it so.
    """
    closed = circuit.close_circuit(destination=destination, detail="closed by hand", actor=actor,
                                   source=source)
    if not closed:
        raise CircuitAlreadyClosed(f"The circuit of {destination.name} is closed already.")
    wake_after_close(destination.pk)
    return destination


class ResyncRefused(Exception):
    """A resync that cannot be: `field` names the input at fault (None: the destination's state)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ResyncNotQueued(Exception):
    """The resync task could not be queued: the broker does not answer (nothing was started)."""


def resync(
    *,
    destination: Destination,
    since: dt.datetime | None,
    actor: AbstractBaseUser | AnonymousUser | None,
    source: str,
) -> int:
    """Queue a fresh full-state real-time send of `destination`'s devices; return how many (CONTRACT §7).

    Every device with an active mapping to it, or with `since`, only the devices of its
    deliveries that failed since then. The marking is a task on the `maintenance` queue
    (`delivery.tasks.resync_destination`, in chunks); the normal real-time path sends. A paused
    destination accepts it: its devices wait, pending, and go out on the resume. Recorded in the
    change log with its scope. Raises ResyncRefused when `since` is in the future or the
    destination is not real-time, ResyncNotQueued when the broker does not answer (nothing
    is recorded then).
    """
    now = timezone.now()
    if since is not None and since > now:
        raise ResyncRefused("since must not be in the future.", field="since")
    if not destination.realtime:
        raise ResyncRefused(f"{destination.name} is not real-time: a resync sends real-time requests.")
    devices = count_resync_devices(destination=destination, since=since, now=now)
    try:
        tasks.resync_destination.delay(destination.pk, since.isoformat() if since else None, now.isoformat())
    except OperationalError as error:
        logger.warning("could not queue the resync of destination %s: %s", destination.pk, error)
        raise ResyncNotQueued("The task broker is unavailable; try again shortly.") from error
    scope = {"since": since.isoformat() if since else None, "devices": devices}
    record_change(actor=actor, source=source, action=ChangeAction.RESYNC, instance=destination, changes=scope)
    return devices
