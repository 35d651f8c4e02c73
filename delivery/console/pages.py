"""The console's pages: dashboard, find a device, device, destination and delivery (read-only)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from delivery.console import charts, lookup
from delivery.console.access import CHANGE_DESTINATION, SEND_DELIVERY, may_act, reader
from delivery.models import Delivery, DeliveryStatus
from delivery.observability.stats import (
    DEFAULT_HOURS,
    HOUR_CHOICES,
    DestinationStats,
    destination_stats,
    failure_label,
)
from destinations.models import Destination, utc_today

PAGE_SIZE = 25


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


def render_delivery(request: HttpRequest, delivery: Delivery, *, status: int = 200) -> HttpResponse:
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
    return render_delivery(request, delivery)
