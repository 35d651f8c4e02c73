"""Delivery statistics for the console: plain queries that aggregate in the database.

Every function groups in SQL (by destination, hour, status or reason) and returns small
dataclasses, so that pages never load delivery rows one by one. Percentiles come from
`delivery.dialect.percentiles` (PostgreSQL's `percentile_cont`, or the same interpolation in Python).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from django.db.models import Count, Min, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from delivery import dialect
from delivery.models import Attempt, Delivery, DeliveryStatus, DestinationDevice

HOUR_CHOICES = (6, 24, 72, 168)
DEFAULT_HOURS = 24
LATENCY_FRACTIONS = (0.5, 0.95, 0.99)  # p50, p95, p99


@dataclass(frozen=True)
class Bucket:
    """Requests created in one hour, by status, and the users the delivered ones carried."""

    start: dt.datetime
    delivered: int = 0
    failed: int = 0
    pending: int = 0
    users_delivered: int = 0

    @property
    def requests(self) -> int:
        return self.delivered + self.failed + self.pending


@dataclass(frozen=True)
class Latency:
    """Attempt durations in milliseconds; the percentiles are None when there was no attempt."""

    count: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


@dataclass(frozen=True)
class Backlog:
    """Devices waiting for a real-time request, and since when the oldest waits."""

    devices: int = 0
    oldest_since: dt.datetime | None = None


@dataclass(frozen=True)
class DestinationStats:
    destination_id: int
    buckets: list[Bucket]
    latency: Latency
    failures: list[tuple[str, int]]  # (reason label, failed attempts), most frequent first
    backlog: Backlog

    @property
    def requests(self) -> int:
        return sum(bucket.requests for bucket in self.buckets)

    @property
    def users_delivered(self) -> int:
        return sum(bucket.users_delivered for bucket in self.buckets)

    @property
    def success_rate(self) -> float | None:
        """Delivered over finished requests in the window; None when none finished."""
        delivered = sum(bucket.delivered for bucket in self.buckets)
        finished = delivered + sum(bucket.failed for bucket in self.buckets)
        return delivered / finished if finished else None


def window_start(*, hours: int, now: dt.datetime) -> dt.datetime:
    """The start of the first of `hours` hourly buckets, the last of which holds `now`."""
    current_hour = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return current_hour - dt.timedelta(hours=hours - 1)


def request_buckets(*, destination_ids: Sequence[int], hours: int, now: dt.datetime
                    ) -> dict[int, list[Bucket]]:
    """Hourly buckets of requests per destination over the last `hours` hours, empty hours included."""
    since = window_start(hours=hours, now=now)
    rows = (
        Delivery.objects.filter(destination_id__in=destination_ids, created_at__gte=since)
        .annotate(hour=TruncHour("created_at", tzinfo=dt.UTC))
        .values("destination_id", "hour", "status")
        .annotate(requests=Count("id"), users=Sum("user_count"))
        .order_by()
    )
    counts: dict[tuple[int, dt.datetime], dict[str, int]] = defaultdict(dict)
    for row in rows:
        cell = counts[(row["destination_id"], row["hour"].astimezone(dt.UTC))]
        cell[row["status"]] = row["requests"]
        if row["status"] == DeliveryStatus.DELIVERED:
            cell["users"] = row["users"] or 0
    starts = [since + dt.timedelta(hours=offset) for offset in range(hours)]
    return {
        destination_id: [
            _bucket(start=start, cell=counts.get((destination_id, start), {})) for start in starts
        ]
        for destination_id in destination_ids
    }


def _bucket(*, start: dt.datetime, cell: dict[str, int]) -> Bucket:
    return Bucket(
        start=start,
        delivered=cell.get(DeliveryStatus.DELIVERED, 0),
        failed=cell.get(DeliveryStatus.FAILED, 0),
        pending=cell.get(DeliveryStatus.PENDING, 0),
        users_delivered=cell.get("users", 0),
    )


def attempt_latency(*, destination_ids: Sequence[int], since: dt.datetime) -> dict[int, Latency]:
    """p50/p95/p99 of attempt durations per destination, attempts started since `since`."""
    attempts = Attempt.objects.filter(delivery__destination_id__in=destination_ids, started_at__gte=since)
    found = dialect.percentiles(attempts, group="delivery__destination_id", value="duration_ms",
                                fractions=LATENCY_FRACTIONS)
    return {destination_id: _latency(count=count, values=values)
            for destination_id, (count, values) in found.items()}


def _latency(*, count: int, values: list[float | None]) -> Latency:
    p50, p95, p99 = values
    return Latency(count=count, p50=p50, p95=p95, p99=p99)


def failure_reasons(*, destination_ids: Sequence[int], since: dt.datetime
                    ) -> dict[int, list[tuple[str, int]]]:
    """Failed attempts per destination by reason, a non-200 answer counted per status code."""
    rows = (
        Attempt.objects.filter(
            delivery__destination_id__in=destination_ids, started_at__gte=since, reason__isnull=False
        )
        .values("delivery__destination_id", "reason", "status_code")
        .annotate(attempts=Count("id"))
        .order_by()
    )
    totals: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        label = failure_label(reason=row["reason"], status_code=row["status_code"])
        totals[row["delivery__destination_id"]][label] += row["attempts"]
    return {
        destination_id: sorted(by_label.items(), key=lambda item: (-item[1], item[0]))
        for destination_id, by_label in totals.items()
    }


def failure_label(*, reason: str | None, status_code: int | None) -> str:
    """How a failed attempt reads: its reason, or `HTTP <code>` for a non-200 answer."""
    if reason == "status" and status_code is not None:
        return f"HTTP {status_code}"
    return reason or "ok"


def pending_backlog(*, destination_ids: Sequence[int] | None = None) -> dict[int, Backlog]:
    """Pending devices per destination (`DestinationDevice.pending_since` set) and the oldest."""
    pending = DestinationDevice.objects.filter(pending_since__isnull=False)
    if destination_ids is not None:
        pending = pending.filter(destination_id__in=destination_ids)
    rows = pending.values("destination_id").annotate(devices=Count("id"), oldest=Min("pending_since"))
    return {
        row["destination_id"]: Backlog(devices=row["devices"], oldest_since=row["oldest"])
        for row in rows.order_by()
    }


def destination_stats(*, destination_ids: Sequence[int], hours: int, now: dt.datetime | None = None
                      ) -> dict[int, DestinationStats]:
    """Everything the dashboard shows per destination over the last `hours` hours."""
    now = now or timezone.now()
    since = window_start(hours=hours, now=now)
    buckets = request_buckets(destination_ids=destination_ids, hours=hours, now=now)
    latency = attempt_latency(destination_ids=destination_ids, since=since)
    failures = failure_reasons(destination_ids=destination_ids, since=since)
    backlog = pending_backlog(destination_ids=destination_ids)
    return {
        destination_id: DestinationStats(
            destination_id=destination_id,
            buckets=buckets[destination_id],
            latency=latency.get(destination_id, Latency()),
            failures=failures.get(destination_id, []),
            backlog=backlog.get(destination_id, Backlog()),
        )
        for destination_id in destination_ids
    }
