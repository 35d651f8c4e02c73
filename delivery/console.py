"""The operator console under /dashboard/: dashboard, find a device, destination and delivery pages.

Login is required (the admin's login page). Viewers, operators and staff read every page; the
buttons that change something (test, pause, resume, send the batch, redeliver) answer only to
superusers, the `operator` group and staff holding the matching model permission.

Views translate the request and call plain functions: `delivery.stats` and `delivery.lookup` for
reading, `delivery.sending` and `delivery.tasks` for acting. Those two are imported when a button is
pressed, so that every page reads even where the sender is not installed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Page, Paginator
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_POST

from aamdest.permissions import can_read, is_operator
from delivery import charts, lookup
from delivery.models import Delivery, DeliveryStatus
from delivery.stats import DEFAULT_HOURS, HOUR_CHOICES, DestinationStats, destination_stats, failure_label
from destinations.models import Destination, utc_today

logger = logging.getLogger(__name__)

PAGE_SIZE = 25
# The model permission a staff user needs for each kind of button (operators need none).
CHANGE_DESTINATION = "destinations.change_destination"
SEND_DELIVERY = "delivery.add_delivery"
UNAVAILABLE = "The sender is not installed in this deployment, so this action is unavailable."

View = Callable[..., HttpResponse]


def may_act(user: Any, *, permission: str) -> bool:
    """Superusers, the `operator` group, and staff holding `permission` may press buttons."""
    if not (user.is_authenticated and user.is_active):
        return False
    return user.is_superuser or is_operator(user) or (user.is_staff and user.has_perm(permission))


def _forbidden(request: HttpRequest, *, message: str) -> HttpResponse:
    return render(request, "console/forbidden.html", {"message": message}, status=403)


def reader(view: View) -> View:
    @login_required
    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not can_read(request.user):
            return _forbidden(request, message="The console needs a staff account or the viewer role.")
        return view(request, *args, **kwargs)

    return guarded


def actor(permission: str) -> Callable[[View], View]:
    def decorate(view: View) -> View:
        @login_required
        @require_POST
        @wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not may_act(request.user, permission=permission):
                return _forbidden(request, message="This action needs the operator role.")
            return view(request, *args, **kwargs)

        return guarded

    return decorate


def _page(request: HttpRequest, items: QuerySet) -> Page:
    return Paginator(items, PAGE_SIZE).get_page(request.GET.get("page"))


def _hours(raw: str | None) -> int:
    return int(raw) if raw and raw.isdigit() and int(raw) in HOUR_CHOICES else DEFAULT_HOURS


def _period_label(hours: int) -> str:
    return f"{hours // 24} days" if hours > 24 and hours % 24 == 0 else f"{hours} hours"


def _success_class(rate: float | None) -> str:
    if rate is None:
        return "none"
    return "good" if rate >= 0.99 else "fair" if rate >= 0.9 else "poor"


def _card(destination: Destination, stats: DestinationStats) -> dict[str, Any]:
    latency, rate = stats.latency, stats.success_rate
    return {
        "destination": destination,
        "stats": stats,
        "success_percent": None if rate is None else round(rate * 100, 1),
        "success_class": _success_class(rate),
        "requests_chart": charts.requests_chart(stats.buckets),
        "users_chart": charts.users_chart(stats.buckets),
        "latency_chart": charts.latency_chart(p50=latency.p50, p95=latency.p95, p99=latency.p99,
                                              timeout_ms=destination.timeout_ms),
        "failures_chart": charts.failures_chart(stats.failures),
    }


# --- Reading -----------------------------------------------------------------------------------


@reader
def dashboard(request: HttpRequest) -> HttpResponse:
    hours = _hours(request.GET.get("hours"))
    destinations = list(Destination.objects.all())
    stats = destination_stats(destination_ids=[destination.id for destination in destinations], hours=hours)
    cards = [_card(destination, stats[destination.id]) for destination in destinations]
    return render(request, "console/dashboard.html", {
        "cards": cards,
        "hours": hours,
        "hour_choices": [(choice, _period_label(choice)) for choice in HOUR_CHOICES],
        "period": _period_label(hours),
        "total_requests": sum(card["stats"].requests for card in cards),
        "total_users": sum(card["stats"].users_delivered for card in cards),
        "total_pending": sum(card["stats"].backlog.devices for card in cards),
    })


@reader
def device_search(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()[:255]
    matches = lookup.find_devices(query=query) if query else []
    if len(matches) == 1:
        return redirect("console:device", aam_uuid=matches[0][0])
    return render(request, "console/device_search.html", {"query": query, "matches": matches})


@reader
def device_page(request: HttpRequest, aam_uuid: str) -> HttpResponse:
    profile = lookup.device_profile(aam_uuid=aam_uuid)
    deliveries = _page(request, lookup.deliveries_carrying(aam_uuid=aam_uuid))
    status = 404 if profile.device is None and not deliveries.paginator.count else 200
    context = {"profile": profile, "deliveries": deliveries}
    return render(request, "console/device.html", context, status=status)


@reader
def destination_page(request: HttpRequest, pk: int) -> HttpResponse:
    destination = get_object_or_404(Destination, pk=pk)
    status = request.GET.get("status", "")
    deliveries = Delivery.objects.filter(destination=destination)
    if status in DeliveryStatus.values:
        deliveries = deliveries.filter(status=status)
    stats = destination_stats(destination_ids=[destination.id], hours=DEFAULT_HOURS)[destination.id]
    today = utc_today()
    return render(request, "console/destination.html", {
        "destination": destination,
        "card": _card(destination, stats),
        "mappings": [(mapping, mapping.is_active_on(today))
                     for mapping in destination.mappings.select_related("segment")],
        "deliveries": _page(request, lookup.with_last_answer(deliveries)),
        "status": status,
        "statuses": DeliveryStatus.values,
        "may_send": may_act(request.user, permission=SEND_DELIVERY),
        "may_change": may_act(request.user, permission=CHANGE_DESTINATION),
        "default_since": (timezone.now() - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
    })


def _render_delivery(request: HttpRequest, delivery: Delivery, *, status: int = 200) -> HttpResponse:
    devices = delivery.devices.order_by("aam_uuid")
    return render(request, "console/delivery.html", {
        "delivery": delivery,
        "attempts": [(attempt, failure_label(reason=attempt.reason, status_code=attempt.status_code))
                     for attempt in delivery.attempts.order_by("number")],
        "document": lookup.pretty_document(delivery.body),
        "device_count": devices.count(),
        "devices": devices.values_list("aam_uuid", flat=True)[:100],
        "redeliveries": delivery.redeliveries.order_by("created_at"),
        "may_send": may_act(request.user, permission=SEND_DELIVERY),
    }, status=status)


@reader
def delivery_page(request: HttpRequest, pk: int) -> HttpResponse:
    delivery = get_object_or_404(Delivery.objects.select_related("destination", "redelivery_of"), pk=pk)
    return _render_delivery(request, delivery)


# --- Acting ------------------------------------------------------------------------------------


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
        from delivery.sending import send_test_document
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
    destination = get_object_or_404(Destination, pk=pk)
    destination.enabled = enabled
    destination.save(update_fields=["enabled", "updated_at"])
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
    from delivery import sending, tasks

    with transaction.atomic():
        new = sending.create_redelivery(delivery=delivery)
        # robust: a broker outage after the commit is logged; the pending delivery stays listed.
        transaction.on_commit(lambda: tasks.send_delivery_task.delay(new.id), robust=True)
    return new


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
        from delivery.sending import RedeliveryConflict
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
        from delivery.sending import RedeliveryConflict
        from delivery.tasks import send_delivery_task  # noqa: F401 - checks that the task is installed
    except ImportError:
        messages.error(request, UNAVAILABLE)
        return redirect("console:delivery", pk=pk)
    try:
        new = redeliver_now(delivery)
    except RedeliveryConflict:
        messages.error(request, "This delivery is still pending: redeliver it once it has finished.")
        return _render_delivery(request, delivery, status=409)
    messages.success(request, f"Redelivery #{new.pk} of delivery #{delivery.pk} is queued.")
    return redirect("console:delivery", pk=new.pk)


app_name = "console"
urlpatterns = [
    path("", dashboard, name="dashboard"),
    path("devices/", device_search, name="device-search"),
    path("devices/<str:aam_uuid>/", device_page, name="device"),
    path("destinations/<int:pk>/", destination_page, name="destination"),
    path("destinations/<int:pk>/test/", send_test, name="send-test"),
    path("destinations/<int:pk>/pause/", pause, name="pause"),
    path("destinations/<int:pk>/resume/", resume, name="resume"),
    path("destinations/<int:pk>/send-batch/", send_batch, name="send-batch"),
    path("destinations/<int:pk>/redeliver-failed/", redeliver_failed, name="redeliver-failed"),
    path("deliveries/<int:pk>/", delivery_page, name="delivery"),
    path("deliveries/<int:pk>/redeliver/", redeliver, name="redeliver"),
]
