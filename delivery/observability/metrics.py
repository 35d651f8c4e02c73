"""GET /metrics: Prometheus text format, every metric named `aamdest_…` (SPEC §5).

Workers send from other processes, so nothing is counted in this one: a custom collector computes
the values at scrape time, from aggregate queries over the delivery log (deliveries, attempts,
attempt latency, pending backlog) and from the Redis counters that ingestion and the OAuth client
increment (events ingested, token fetches). Counts over the log fall when old records are purged
(`AAMDEST_DELIVERY_LOG_DAYS`); Prometheus reads such a fall as a counter reset.

No login: Prometheus scrapes without a session. The page holds counts and destination names, no
document and no secret; with `AAMDEST_METRICS_TOKEN` set, a scrape must carry
`Authorization: Bearer <token>` (401 otherwise), as Prometheus' `authorization` option sends it.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from delivery.models import Attempt, Delivery
from delivery.observability import stats
from delivery.observability.heartbeat import last_beat_tick
from destinations.models import Destination

LABELS = ["destination_id", "destination"]
# Upper bounds, in milliseconds, of the attempt latency histogram; the deadline defaults to 3000.
LATENCY_BOUNDS_MS = (50, 100, 250, 500, 1000, 2000, 3000, 5000, 10_000, 30_000)


@dataclass(frozen=True)
class Histogram:
    """Cumulative counts per bound of `LATENCY_BOUNDS_MS` (Prometheus `le`), total count and sum."""

    cumulative_counts: list[int]
    count: int
    sum_ms: int


def delivery_counts() -> list[tuple[int, str, int]]:
    """(destination id, status, deliveries) over the delivery log."""
    rows = Delivery.objects.values_list("destination_id", "status").annotate(n=Count("id")).order_by()
    return [(destination_id, status, n) for destination_id, status, n in rows]


def attempt_counts() -> list[tuple[int, str, int]]:
    """(destination id, outcome, attempts): outcome is `ok` or the failure reason."""
    rows = Attempt.objects.values_list("delivery__destination_id", "reason").annotate(n=Count("id"))
    return [(destination_id, reason or "ok", n) for destination_id, reason, n in rows.order_by()]


def latency_histograms() -> dict[int, Histogram]:
    """Attempt durations per destination, counted under each bound of `LATENCY_BOUNDS_MS` in one query."""
    under_bounds = {
        f"le_{bound}": Count("id", filter=Q(duration_ms__lte=bound)) for bound in LATENCY_BOUNDS_MS
    }
    rows = (
        Attempt.objects.values("delivery__destination_id")
        .annotate(count=Count("id"), sum_ms=Sum("duration_ms"), **under_bounds)
        .order_by()
    )
    return {
        row["delivery__destination_id"]: Histogram(
            cumulative_counts=[row[f"le_{bound}"] for bound in LATENCY_BOUNDS_MS],
            count=row["count"],
            sum_ms=row["sum_ms"] or 0,
        )
        for row in rows
    }


class DeliveryLogCollector:
    """Reads the delivery log and the Redis counters at each scrape."""

    def collect(self) -> Iterator[Metric]:
        destinations = dict(Destination.objects.values_list("id", "name"))
        yield from self._destinations(destinations)
        yield from self._deliveries(destinations)
        yield from self._attempts(destinations)
        yield from self._backlog(destinations)
        yield from self._counters(destinations)
        yield from self._beat()

    @staticmethod
    def _labels(destinations: dict[int, str], destination_id: int) -> list[str]:
        return [str(destination_id), destinations.get(destination_id, "")]

    def _destinations(self, destinations: dict[int, str]) -> Iterator[Metric]:
        enabled = GaugeMetricFamily(
            "aamdest_destination_enabled", "1 when the destination sends, 0 when paused.", labels=LABELS
        )
        for destination_id, is_enabled in Destination.objects.values_list("id", "enabled"):
            enabled.add_metric(self._labels(destinations, destination_id), 1 if is_enabled else 0)
        yield enabled

    def _deliveries(self, destinations: dict[int, str]) -> Iterator[Metric]:
        finished = CounterMetricFamily("aamdest_deliveries", "Deliveries (requests) finished, by outcome.",
                                       labels=[*LABELS, "outcome"])
        pending = GaugeMetricFamily(
            "aamdest_deliveries_pending", "Deliveries in flight or waiting for a retry.", labels=LABELS
        )
        counts = {(destination_id, status): n for destination_id, status, n in delivery_counts()}
        for destination_id in destinations:
            labels = self._labels(destinations, destination_id)
            for outcome in ("delivered", "failed"):
                finished.add_metric([*labels, outcome], counts.get((destination_id, outcome), 0))
            pending.add_metric(labels, counts.get((destination_id, "pending"), 0))
        yield finished
        yield pending

    def _attempts(self, destinations: dict[int, str]) -> Iterator[Metric]:
        attempts = CounterMetricFamily(
            "aamdest_attempts", "HTTP attempts, by outcome (ok or the failure reason).",
            labels=[*LABELS, "outcome"],
        )
        for destination_id, outcome, n in attempt_counts():
            attempts.add_metric([*self._labels(destinations, destination_id), outcome], n)
        yield attempts
        latency = HistogramMetricFamily("aamdest_attempt_duration_seconds", "Duration of HTTP attempts.",
                                        labels=LABELS)
        for destination_id, histogram in latency_histograms().items():
            bounds = zip(LATENCY_BOUNDS_MS, histogram.cumulative_counts, strict=True)
            buckets = [(floatToGoString(bound / 1000), count) for bound, count in bounds]
            buckets.append(("+Inf", histogram.count))
            latency.add_metric(self._labels(destinations, destination_id), buckets,
                               sum_value=histogram.sum_ms / 1000)
        yield latency

    def _backlog(self, destinations: dict[int, str]) -> Iterator[Metric]:
        devices = GaugeMetricFamily("aamdest_pending_devices", "Devices waiting for a real-time request.",
                                    labels=LABELS)
        oldest = GaugeMetricFamily(
            "aamdest_pending_oldest_age_seconds", "How long the oldest pending device waits (0: none).",
            labels=LABELS,
        )
        backlog = stats.pending_backlog()
        now = timezone.now()
        for destination_id in destinations:
            labels = self._labels(destinations, destination_id)
            entry = backlog.get(destination_id, stats.Backlog())
            devices.add_metric(labels, entry.devices)
            age = (now - entry.oldest_since).total_seconds() if entry.oldest_since else 0.0
            oldest.add_metric(labels, max(age, 0.0))
        yield devices
        yield oldest

    def _counters(self, destinations: dict[int, str]) -> Iterator[Metric]:
        counters = stats.read_counters()
        up = GaugeMetricFamily("aamdest_metrics_redis_up", "1 when the Redis counters could be read.")
        up.add_metric([], 1 if counters else 0)
        yield up
        if counters is None:
            return
        events = CounterMetricFamily("aamdest_events_ingested", "Events accepted for ingestion.")
        events.add_metric([], counters.events_ingested)
        yield events
        fetches = CounterMetricFamily("aamdest_token_fetches", "OAuth 2.0 token requests, by outcome.",
                                      labels=[*LABELS, "outcome"])
        for (destination_id, outcome), n in sorted(counters.token_fetches.items()):
            if destination_id in destinations:
                fetches.add_metric([*self._labels(destinations, destination_id), outcome], n)
        yield fetches


    def _beat(self) -> Iterator[Metric]:
        last = last_beat_tick()
        if last is None:
            return  # no beat ever ticked, or Redis is down (aamdest_metrics_redis_up says which)
        tick = GaugeMetricFamily("aamdest_beat_last_tick_timestamp_seconds",
                                 "When the leading beat last ticked (Unix time).")
        tick.add_metric([], last)
        yield tick


# Our own registry: only aamdest's metrics, not the web process's own (which says little of a fleet).
registry = CollectorRegistry(auto_describe=False)
registry.register(DeliveryLogCollector())


def is_authorized(request: HttpRequest) -> bool:
    """True when no metrics token is configured, or the request's bearer token is that token."""
    expected = settings.AAMDEST_METRICS_TOKEN
    if not expected:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    if not is_authorized(request):
        response = HttpResponse("# a bearer token is required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    try:
        body = generate_latest(registry)
    except DatabaseError:
        return HttpResponse("# the database is unavailable\n", status=503, content_type="text/plain")
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
