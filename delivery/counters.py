"""The running totals behind /metrics, kept in Redis so that a scrape never reads the delivery log.

Producers call these as things happen, and every process shares the result:
ingestion `count_events_ingested`, `delivery.sending.tokens` `count_token_fetch`,
`delivery.sending.attempts` `count_attempts` (outcome and latency histogram) and
`delivery.sending.ending` `count_finished_deliveries`, the last two once their rows
have committed. `read_counters` and `read_delivery_totals` read them back for
`/metrics` (`delivery.observability.metrics`); their cost depends on the number of
destinations and outcomes, never on the size of the log.

These are counters in Prometheus' sense: they only grow, and restart from zero if
Redis loses them (a flush, a Redis without persistence restarted); Prometheus reads
that as a counter reset, which `rate()` and `increase()` handle.
Best effort both ways: a Redis outage is logged, never raised.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from delivery.coordination import (
    ATTEMPT_LATENCY_KEY,
    ATTEMPTS_KEY,
    DELIVERIES_FINISHED_KEY,
    EVENTS_INGESTED_KEY,
    TOKEN_FETCHES_KEY,
    counters_client,
    destination_field,
    token_fetch_field,
)

logger = logging.getLogger(__name__)

# Upper bounds, in milliseconds, of the attempt latency histogram; the deadline defaults to 3000.
LATENCY_BOUNDS_MS = (50, 100, 250, 500, 1000, 2000, 3000, 5000, 10_000, 30_000)
OVER_BOUNDS = "le_inf"  # the bucket of attempts slower than the last bound
SUM_MS = "sum_ms"


@dataclass(frozen=True)
class Counters:
    events_ingested: int
    token_fetches: dict[tuple[int, str], int]  # (destination id, outcome) -> fetches


@dataclass(frozen=True)
class Histogram:
    """Cumulative counts per bound of `LATENCY_BOUNDS_MS` (Prometheus `le`), total count and sum."""

    cumulative_counts: list[int]
    count: int
    sum_ms: int


@dataclass(frozen=True)
class DeliveryTotals:
    attempts: dict[tuple[int, str], int]  # (destination id, `ok` or the failure reason) -> attempts
    finished: dict[tuple[int, str], int]  # (destination id, `delivered` or `failed`) -> deliveries
    latency: dict[int, Histogram]  # destination id -> its attempts' durations


def count_events_ingested(n: int) -> None:
    """Add `n` to the events-ingested counter. Best effort: a Redis outage is logged, not raised."""
    if n <= 0:
        return
    try:
        counters_client().incrby(EVENTS_INGESTED_KEY, n)
    except redis.RedisError as exc:
        logger.warning("could not count %d ingested events: %s", n, exc)


def count_token_fetch(*, destination_id: int, outcome: str) -> None:
    """Count one OAuth token request of a destination (`outcome`: e.g. `ok` or `error`). Best effort."""
    field = token_fetch_field(destination_id=destination_id, outcome=outcome)
    try:
        counters_client().hincrby(TOKEN_FETCHES_KEY, field, 1)
    except redis.RedisError as exc:
        logger.warning("could not count a token fetch of destination %s: %s", destination_id, exc)


def latency_bucket(duration_ms: int) -> str:
    """The histogram bucket of one duration: `le_<the first bound not below it>`, or `le_inf`."""
    return next((f"le_{bound}" for bound in LATENCY_BOUNDS_MS if duration_ms <= bound), OVER_BOUNDS)


def count_attempts(*, destination_id: int, attempts: Sequence[tuple[str, int]]) -> None:
    """Count a destination's attempts, each an (outcome, duration in ms) pair, in one Redis transaction.

    Outcome: `ok` or the failure reason. Best effort: a Redis outage is logged, not raised.
    """
    if not attempts:
        return
    by_field = {
        ATTEMPTS_KEY: Counter(outcome for outcome, _ in attempts),
        ATTEMPT_LATENCY_KEY: Counter(latency_bucket(duration_ms) for _, duration_ms in attempts),
    }
    by_field[ATTEMPT_LATENCY_KEY][SUM_MS] = sum(duration_ms for _, duration_ms in attempts)
    _increment(destination_id=destination_id, by_field=by_field, what=f"{len(attempts)} attempts")


def count_finished_deliveries(*, destination_id: int, outcomes: Sequence[str]) -> None:
    """Count a destination's deliveries that ended, one outcome (`delivered`, `failed`) each. Best effort."""
    if outcomes:
        by_field = {DELIVERIES_FINISHED_KEY: Counter(outcomes)}
        _increment(destination_id=destination_id, by_field=by_field, what=f"{len(outcomes)} ended deliveries")


def _increment(*, destination_id: int, by_field: dict[str, Counter[str]], what: str) -> None:
    # One MULTI/EXEC: a scrape sees all of a round's increments or none of them.
    try:
        pipeline = counters_client().pipeline(transaction=True)
        for key, counts in by_field.items():
            for label, n in counts.items():
                pipeline.hincrby(key, destination_field(destination_id=destination_id, label=label), n)
        pipeline.execute()
    except redis.RedisError as exc:
        logger.warning("could not count %s of destination %s: %s", what, destination_id, exc)


def read_counters() -> Counters | None:
    """The events-ingested and token-fetch counters, or None when Redis does not answer."""
    try:
        client = counters_client()
        events = client.get(EVENTS_INGESTED_KEY)
        fetches = client.hgetall(TOKEN_FETCHES_KEY)
    except redis.RedisError as exc:
        logger.warning("could not read the metrics counters: %s", exc)
        return None
    return Counters(events_ingested=int(events or 0), token_fetches=_per_destination(fetches))


def read_delivery_totals() -> DeliveryTotals | None:
    """The attempt, ended-delivery and latency totals per destination, or None when Redis does not answer."""
    try:
        pipeline = counters_client().pipeline(transaction=False)
        for key in (ATTEMPTS_KEY, DELIVERIES_FINISHED_KEY, ATTEMPT_LATENCY_KEY):
            pipeline.hgetall(key)
        attempts, finished, latency = pipeline.execute()
    except redis.RedisError as exc:
        logger.warning("could not read the delivery totals: %s", exc)
        return None
    return DeliveryTotals(
        attempts=_per_destination(attempts),
        finished=_per_destination(finished),
        latency=_histograms(_per_destination(latency)),
    )


def _per_destination(fields: dict[bytes | str, bytes | str]) -> dict[tuple[int, str], int]:
    """A hash of `<destination id>:<label>` fields, as (destination id, label) -> count."""
    counts = {}
    for field, value in fields.items():
        text = field.decode() if isinstance(field, bytes) else field
        destination_id, _, label = text.partition(":")
        if destination_id.isdigit():
            counts[(int(destination_id), label)] = int(value)
    return counts


def _histograms(fields: dict[tuple[int, str], int]) -> dict[int, Histogram]:
    histograms = {}
    for destination_id in sorted({destination_id for destination_id, _ in fields}):
        running, cumulative = 0, []
        for bound in LATENCY_BOUNDS_MS:
            running += fields.get((destination_id, f"le_{bound}"), 0)
            cumulative.append(running)
        histograms[destination_id] = Histogram(
            cumulative_counts=cumulative,
            count=running + fields.get((destination_id, OVER_BOUNDS), 0),
            sum_ms=fields.get((destination_id, SUM_MS), 0),
        )
    return histograms
