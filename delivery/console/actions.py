"""The console's buttons: test document, pause, resume, send the batch now, redeliver, close circuit, resync.

Each button calls its operator action's service (`destinations.services`, `delivery.services`),
the same one the API and the admin call, and turns its outcome or error into a message.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect

from delivery import services as delivery_services
from delivery.console.access import CHANGE_DESTINATION, SEND_DELIVERY, actor
from delivery.console.pages import render_delivery
from delivery.models import Delivery
from delivery.observability.stats import failure_label
from destinations import services as destination_services
from destinations.models import ChangeSource, Destination

logger = logging.getLogger(__name__)


def _test_message(outcome: destination_services.TestOutcome) -> str:
    delivery = outcome.delivery
    if not outcome.attempts:
        return f"Test document {delivery.status}: no attempt was made."
    if outcome.succeeded:
        return f"Test document delivered: HTTP 200 in {outcome.duration_ms} ms."
    label = failure_label(reason=outcome.reason, status_code=outcome.status_code)
    ended = f"Test document {delivery.status} after {outcome.attempts} attempt(s)"
    return f"{ended}: {label}. {outcome.error}".rstrip()


@actor(SEND_DELIVERY)
def send_test(request: HttpRequest, pk: int) -> HttpResponse:
    destination = get_object_or_404(Destination, pk=pk)
    try:
        outcome = destination_services.send_test(destination=destination)
    except Exception as exc:  # say what happened instead of a bare 500; the log has the trace
        logger.exception("the test document of destination %s could not be sent", pk)
        messages.error(request, f"The test document could not be sent ({exc.__class__.__name__}: {exc}).")
        return redirect("console:destination", pk=pk)
    (messages.success if outcome.succeeded else messages.error)(request, _test_message(outcome))
    return redirect("console:delivery", pk=outcome.delivery.pk)


@actor(CHANGE_DESTINATION)
def pause(request: HttpRequest, pk: int) -> HttpResponse:
    destination = get_object_or_404(Destination, pk=pk)
    destination_services.pause_destination(destination_id=destination.pk, actor=request.user,
                                           source=ChangeSource.CONSOLE)
    messages.success(request, f"{destination.name} paused: its pending devices wait for the resume.")
    return redirect("console:destination", pk=pk)


@actor(CHANGE_DESTINATION)
def resume(request: HttpRequest, pk: int) -> HttpResponse:
    destination = get_object_or_404(Destination, pk=pk)
    destination_services.resume_destination(destination_id=destination.pk, actor=request.user,
                                            source=ChangeSource.CONSOLE)
    messages.success(request, f"{destination.name} resumed: its pending devices go out now.")
    return redirect("console:destination", pk=pk)


@actor(SEND_DELIVERY)
def send_batch(request: HttpRequest, pk: int) -> HttpResponse:
    destination = get_object_or_404(Destination, pk=pk)
    try:
        destination_services.start_batch_now(destination=destination)
    except (destination_services.DestinationPaused, destination_services.BatchNotQueued) as error:
        messages.error(request, str(error))
        return redirect("console:destination", pk=pk)
    messages.success(request, f"The batch of {destination.name} is queued; its requests appear below.")
    return redirect("console:destination", pk=pk)



@actor(CHANGE_DESTINATION)
def close_circuit(request: HttpRequest, pk: int) -> HttpResponse:
    """The Close circuit button (CONTRACT §7): the same service as `POST .../close-circuit/`."""
    destination = get_object_or_404(Destination, pk=pk)
    try:
        destination_services.close_circuit(destination=destination, actor=request.user,
                                           source=ChangeSource.CONSOLE)
    except destination_services.CircuitAlreadyClosed as error:
        messages.error(request, str(error))
        return redirect("console:destination", pk=pk)
    messages.success(request, f"The circuit of {destination.name} is closed: its backlog drains now.")
    return redirect("console:destination", pk=pk)

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
    report = delivery_services.redeliver_failed_since(destination=destination, since=since)
    note = f"; {report.skipped} skipped, already being redelivered" if report.skipped else ""
    messages.success(
        request, f"{len(report.queued)} failed deliveries since {since:%Y-%m-%d %H:%M} UTC queued{note}."
    )
    return redirect("console:destination", pk=pk)


@actor(CHANGE_DESTINATION)
def resync(request: HttpRequest, pk: int) -> HttpResponse:
    destination = get_object_or_404(Destination, pk=pk)
    raw = request.POST.get("since", "").strip()
    since = _parse_utc(raw) if raw else None
    if raw and since is None:
        messages.error(request, "Give the time to resync from as YYYY-MM-DD HH:MM (UTC), or leave it empty.")
        return redirect("console:destination", pk=pk)
    try:
        devices = destination_services.resync(destination=destination, since=since, actor=request.user,
                                              source=ChangeSource.CONSOLE)
    except (destination_services.ResyncRefused, destination_services.ResyncNotQueued) as error:
        messages.error(request, str(error))
        return redirect("console:destination", pk=pk)
    scope = f"failed deliveries since {since:%Y-%m-%d %H:%M} UTC" if since else "active mappings"
    paused = "" if destination.enabled else "; the destination is paused: they go out on the resume"
    messages.success(request, f"Resync queued: {devices} devices of {scope}{paused}.")
    return redirect("console:destination", pk=pk)


@actor(SEND_DELIVERY)
def redeliver(request: HttpRequest, pk: int) -> HttpResponse:
    delivery = get_object_or_404(Delivery.objects.select_related("destination", "redelivery_of"), pk=pk)
    try:
        new = delivery_services.redeliver(delivery=delivery)
    except delivery_services.RedeliveryConflict:
        messages.error(request, "This delivery is still pending: redeliver it once it has finished.")
        return render_delivery(request, delivery, status=409)
    messages.success(request, f"Redelivery #{new.pk} of delivery #{delivery.pk} is queued.")
    return redirect("console:delivery", pk=new.pk)
