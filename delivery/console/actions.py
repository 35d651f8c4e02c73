"""The console's buttons: send a test document, pause, resume, send the batch now, redeliver.

`delivery.sending.rounds` and `delivery.tasks` are imported when a button is pressed: a deployment
without the sender still reads every page, and a button says plainly that it is unavailable.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect

from delivery.console import lookup
from delivery.console.access import CHANGE_DESTINATION, SEND_DELIVERY, actor
from delivery.console.pages import render_delivery
from delivery.models import Delivery, DeliveryStatus
from delivery.observability.stats import failure_label
from destinations.audit import record_change, snapshot
from destinations.models import ChangeAction, ChangeSource, Destination

logger = logging.getLogger(__name__)

UNAVAILABLE = "The sender is not installed in this deployment, so this action is unavailable."


def _test_outcome(delivery: Delivery) -> tuple[bool, str]:
    last = delivery.attempts.order_by("-number").first()
    if last is None:
        return False, f"Test document {delivery.status}: no attempt was made."
    if delivery.status == DeliveryStatus.DELIVERED:
        return True, f"Test document delivered: HTTP 200 in {last.duration_ms} ms."
    outcome = failure_label(reason=last.reason, status_code=last.status_code)
    return False, (
        f"Test document {delivery.status} after {last.number} attempt(s): {outcome}. {last.error}".rstrip()
    )


@actor(SEND_DELIVERY)
def send_test(request: HttpRequest, pk: int) -> HttpResponse:
    destination = get_object_or_404(Destination, pk=pk)
    try:
        from delivery.sending.rounds import send_test_document
    except ImportError:
        messages.error(request, UNAVAILABLE)
        return redirect("console:destination", pk=pk)
    try:
        delivery = send_test_document(destination=destination)
    except Exception as exc:  # say what happened instead of a bare 500; the log has the trace
        logger.exception("the test document of destination %s could not be sent", pk)
        messages.error(request, f"The test document could not be sent ({exc.__class__.__name__}: {exc}).")
        return redirect("console:destination", pk=pk)
    delivered, text = _test_outcome(delivery)
    (messages.success if delivered else messages.error)(request, text)
    return redirect("console:delivery", pk=delivery.pk)


def _set_enabled(request: HttpRequest, *, pk: int, enabled: bool) -> HttpResponse:
    with transaction.atomic():
        destination = get_object_or_404(Destination.objects.select_for_update(), pk=pk)
        before = snapshot(destination)
        destination.enabled = enabled
        destination.save(update_fields=["enabled", "updated_at"])
        record_change(
            actor=request.user,
            source=ChangeSource.CONSOLE,
            action=ChangeAction.UPDATE,
            instance=destination,
            before=before,
        )
    if enabled:
        messages.success(request, f"{destination.name} resumed: its pending devices go out now.")
    else:
        messages.success(request, f"{destination.name} paused: its pending devices wait for the resume.")
    return redirect("console:destination", pk=pk)


@actor(CHANGE_DESTINATION)
def pause(request: HttpRequest, pk: int) -> HttpResponse:
    return _set_enabled(request, pk=pk, enabled=False)


@actor(CHANGE_DESTINATION)
def resume(request: HttpRequest, pk: int) -> HttpResponse:
    return _set_enabled(request, pk=pk, enabled=True)


@actor(SEND_DELIVERY)
def send_batch(request: HttpRequest, pk: int) -> HttpResponse:
    destination = get_object_or_404(Destination, pk=pk)
    try:
        from delivery.tasks import send_batch_now
    except ImportError:
        messages.error(request, "Sending the batch now is unavailable: the batch task is not installed.")
        return redirect("console:destination", pk=pk)
    try:
        send_batch_now.delay(destination.id)
    except Exception as exc:  # a broker outage must read as a message, not as a 500
        logger.warning("could not queue the batch of destination %s: %s", pk, exc)
        messages.error(request, "The batch could not be queued: the broker does not answer. Try again soon.")
        return redirect("console:destination", pk=pk)
    messages.success(request, f"The batch of {destination.name} is queued; its requests appear below.")
    return redirect("console:destination", pk=pk)


def redeliver_now(delivery: Delivery) -> Delivery:
    """Create the redelivery and queue its sending once committed.

    Raises ImportError when the sender is missing, `RedeliveryConflict` while `delivery` is pending.
    """
    from delivery import tasks

    return tasks.redeliver(delivery=delivery)


def _parse_utc(raw: str) -> dt.datetime | None:
    """An ISO 8601 time (a form's `datetime-local`), UTC when it names no zone; None when invalid."""
    try:
        moment = dt.datetime.fromisoformat(raw.strip())
    except ValueError:
        return None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


@actor(SEND_DELIVERY)
def redeliver_failed(request: HttpRequest, pk: int) -> HttpResponse:
    destination = get_object_or_404(Destination, pk=pk)
    since = _parse_utc(request.POST.get("since", ""))
    if since is None:
        messages.error(request, "Give the time to redeliver from as YYYY-MM-DD HH:MM (UTC).")
        return redirect("console:destination", pk=pk)
    try:
        from delivery.sending.rounds import RedeliveryConflict
        from delivery.tasks import send_delivery_task  # noqa: F401 - checks that the task is installed
    except ImportError:
        messages.error(request, UNAVAILABLE)
        return redirect("console:destination", pk=pk)
    queued = skipped = 0
    for delivery in lookup.failed_since(destination_id=destination.id, since=since):
        try:
            redeliver_now(delivery)
            queued += 1
        except RedeliveryConflict:
            skipped += 1
    note = f"; {skipped} skipped, already being redelivered" if skipped else ""
    messages.success(request, f"{queued} failed deliveries since {since:%Y-%m-%d %H:%M} UTC queued{note}.")
    return redirect("console:destination", pk=pk)


@actor(SEND_DELIVERY)
def redeliver(request: HttpRequest, pk: int) -> HttpResponse:
    delivery = get_object_or_404(Delivery.objects.select_related("destination", "redelivery_of"), pk=pk)
    try:
        from delivery.sending.rounds import RedeliveryConflict
        from delivery.tasks import send_delivery_task  # noqa: F401 - checks that the task is installed
    except ImportError:
        messages.error(request, UNAVAILABLE)
        return redirect("console:delivery", pk=pk)
    try:
        new = redeliver_now(delivery)
    except RedeliveryConflict:
        messages.error(request, "This delivery is still pending: redeliver it once it has finished.")
        return render_delivery(request, delivery, status=409)
    messages.success(request, f"Redelivery #{new.pk} of delivery #{delivery.pk} is queued.")
    return redirect("console:delivery", pk=new.pk)
