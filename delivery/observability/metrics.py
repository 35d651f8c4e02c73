"""GET /metrics: Prometheus text format, every metric named `aamdest_…` (CONTRACT §5).

Workers send from other processes, so nothing is counted in this one. A scrape's cost must not
grow with the delivery log, so a custom collector reads, at scrape time:
- running totals in Redis (`delivery.counters`), kept up as things happen: attempts by outcome and
  their latency histogram (counted once the `Attempt` rows commit), deliveries ended by outcome
  (once their end commits), events ingested, OAuth token fetches;
- small gauges from the database, each bounded by what is in flight rather than by the log:
  destinations, their circuits (`aamdest_circuit_open`: 1 while open or probing), pending
  deliveries, pending devices (partial indexes keep them so);
- the alerts raised, counted from their rows (`delivery.alert_models`: few, never purged, so the
  count survives a Redis flush), and their sends by channel and status.

The totals are Prometheus counters: they never fall when old records are purged
(`AAMDEST_DELIVERY_LOG_DAYS`), and they restart from zero if Redis loses its data (a flush, a
restart without persistence); Prometheus reads that as a counter reset, which `rate()` and
`increase()` handle. While Redis does not answer, `aamdest_metrics_redis_up` is 0 and the
counters are left out of the page; the database gauges remain.

No login: Prometheus scrapes without a session. The page holds counts and destination names, no
document and no secret; with `AAMDEST_METRICS_TOKEN` set, a scrape must carry
`Authorization: Bearer <token>` (401 otherwise), as Prometheus' `authorization` option sends it.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator

import redis
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from delivery import counters
from delivery.alert_models import Alert, AlertChannel, AlertEvent, AlertSend, AlertSendStatus
from delivery.models import Delivery, DeliveryStatus
from delivery.observability import stats
from delivery.observability.heartbeat import last_beat_tick
from delivery.observability.worker_heartbeat import read_heartbeats
from destinations.models import CircuitState, Destination

LABELS = ["destination_id", "destination"]


def pending_deliveries() -> dict[int, int]:
    """Pending deliveries per destination.

    Read through the partial index `delivery_pending_lease` (status = pending), so its cost
    follows the pending deliveries, not the log.
    """
    rows = Delivery.objects.filter(status=DeliveryStatus.PENDING).values_list("destination_id")
    return dict(rows.annotate(n=Count("id")).order_by())


class DeliveryLogCollector:
    """Reads the running totals in Redis and the in-flight gauges from the database at each scrape."""

    def collect(self) -> Iterator[Metric]:
        # One read of the destinations serves every per-destination family.
        rows = list(Destination.objects.values_list("id", "name", "enabled", "circuit_state"))
        destinations = {destination_id: name for destination_id, name, _, _ in rows}
        totals, other = counters.read_delivery_totals(), counters.read_counters()
        up = GaugeMetricFamily("aamdest_metrics_redis_up", "1 when the Redis counters could be read.")
        up.add_metric([], 1 if totals and other else 0)
        yield up
        yield from self._destinations(destinations, rows)
        yield from self._circuits(destinations, rows)
        yield from self._deliveries(destinations, totals)
        yield from self._backlog(destinations)
        if totals is not None:
            yield from self._attempts(destinations, totals)
        if other is not None:
            yield from self._counters(destinations, other)
        yield from self._beat()
        yield from self._alerts()
        yield from self._workers()

    @staticmethod
    def _labels(destinations: dict[int, str], destination_id: int) -> list[str]:
        return [str(destination_id), destinations.get(destination_id, "")]

    def _destinations(self, destinations: dict[int, str], rows: list[tuple[int, str, bool, str]]
                      ) -> Iterator[Metric]:
        enabled = GaugeMetricFamily(
            "aamdest_destination_enabled", "1 when the destination sends, 0 when paused.", labels=LABELS
        )
        for destination_id, _, is_enabled, _ in rows:
            enabled.add_metric(self._labels(destinations, destination_id), 1 if is_enabled else 0)
        yield enabled

    def _circuits(self, destinations: dict[int, str], rows: list[tuple[int, str, bool, str]]
                  ) -> Iterator[Metric]:
        is_open = GaugeMetricFamily(
            "aamdest_circuit_open", "1 while the destination's circuit is open or probing (CONTRACT §7).",
            labels=LABELS,
        )
        for destination_id, _, _, state in rows:
            is_open.add_metric(self._labels(destinations, destination_id),
                               0 if state == CircuitState.CLOSED else 1)
        yield is_open

    def _deliveries(self, destinations: dict[int, str], totals: counters.DeliveryTotals | None
                    ) -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            "aamdest_deliveries_pending", "Deliveries in flight or waiting for a retry.", labels=LABELS
        )
        in_flight = pending_deliveries()
        for destination_id in destinations:
            pending.add_metric(self._labels(destinations, destination_id), in_flight.get(destination_id, 0))
        yield pending
        if totals is None:
            return
        finished = CounterMetricFamily("aamdest_deliveries", "Deliveries (requests) finished, by outcome.",
                                       labels=[*LABELS, "outcome"])
        for destination_id in destinations:
            for outcome in (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED):
                finished.add_metric([*self._labels(destinations, destination_id), outcome],
                                    totals.finished.get((destination_id, outcome), 0))
        yield finished

    def _attempts(self, destinations: dict[int, str], totals: counters.DeliveryTotals) -> Iterator[Metric]:
        attempts = CounterMetricFamily(
            "aamdest_attempts", "HTTP attempts, by outcome (ok or the failure reason).",
            labels=[*LABELS, "outcome"],
        )
        for (destination_id, outcome), n in sorted(totals.attempts.items()):
            if destination_id in destinations:
                attempts.add_metric([*self._labels(destinations, destination_id), outcome], n)
        yield attempts
        latency = HistogramMetricFamily("aamdest_attempt_duration_seconds", "Duration of HTTP attempts.",
                                        labels=LABELS)
        for destination_id, histogram in totals.latency.items():
            if destination_id not in destinations:
                continue
            bounds = zip(counters.LATENCY_BOUNDS_MS, histogram.cumulative_counts, strict=True)
            # prometheus_client leaves floatToGoString unannotated.
            buckets = [(floatToGoString(bound / 1000), count) for bound, count in bounds]  # type: ignore[no-untyped-call]
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

    def _counters(self, destinations: dict[int, str], other: counters.Counters) -> Iterator[Metric]:
        events = CounterMetricFamily("aamdest_events_ingested", "Events accepted for ingestion.")
        events.add_metric([], other.events_ingested)
        yield events
        fetches = CounterMetricFamily("aamdest_token_fetches", "OAuth 2.0 token requests, by outcome.",
                                      labels=[*LABELS, "outcome"])
        for (destination_id, outcome), n in sorted(other.token_fetches.items()):
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

    def _workers(self) -> Iterator[Metric]:
        try:
            beats = read_heartbeats()
        except redis.RedisError:
            return  # as for beat: aamdest_metrics_redis_up says so
        age = GaugeMetricFamily(
            "aamdest_worker_heartbeat_age_seconds",
            "Seconds since each worker last proved it can work (manage.py worker_probe); gone an hour after.",
            labels=["worker"],
        )
        for beat in beats:
            age.add_metric([beat.hostname], round(beat.age_s, 3))
        yield age

    def _alerts(self) -> Iterator[Metric]:
        raised = CounterMetricFamily("aamdest_alerts", "Alerts raised (reminders included), by event.",
                                     labels=["event"])
        counts = dict(Alert.objects.values_list("event").annotate(n=Count("id")).order_by())
        for event in AlertEvent.values:
            raised.add_metric([event], counts.get(event, 0))
        yield raised
        sends = GaugeMetricFamily("aamdest_alert_sends", "Alert sends, by channel and status.",
                                  labels=["channel", "status"])
        rows = AlertSend.objects.values_list("channel", "status").annotate(n=Count("id")).order_by()
        by_key = {(channel, status): n for channel, status, n in rows}
        for channel in AlertChannel.values:
            for status in AlertSendStatus.values:
                sends.add_metric([channel, status], by_key.get((channel, status), 0))
        yield sends


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
