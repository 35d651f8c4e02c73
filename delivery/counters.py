"""The two counts that are not in the database: events ingested and OAuth token fetches.

Their producers (ingestion, `delivery.sending.tokens`) call `count_events_ingested` and
`count_token_fetch`, which increment Redis counters that every process shares;
`read_counters` reads them back for `/metrics` (`delivery.observability.metrics`).
Best effort both ways: a Redis outage is logged, never raised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from delivery.coordination import EVENTS_INGESTED_KEY, TOKEN_FETCHES_KEY, counters_client, token_fetch_field

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Counters:
    events_ingested: int
    token_fetches: dict[tuple[int, str], int]  # (destination id, outcome) -> fetches


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


def read_counters() -> Counters | None:
    """The Redis counters, or None when Redis does not answer."""
    try:
        client = counters_client()
        events = client.get(EVENTS_INGESTED_KEY)
        fetches = client.hgetall(TOKEN_FETCHES_KEY)
    except redis.RedisError as exc:
        logger.warning("could not read the metrics counters: %s", exc)
        return None
    token_fetches = {}
    for field, value in fetches.items():
        text = field.decode() if isinstance(field, bytes) else field
        destination_id, _, outcome = text.partition(":")
        if destination_id.isdigit():
            token_fetches[(int(destination_id), outcome)] = int(value)
    return Counters(events_ingested=int(events or 0), token_fetches=token_fetches)
