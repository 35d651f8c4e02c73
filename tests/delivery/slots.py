"""Reading the concurrency slots in Redis, for tests (production code never needs to count them)."""

from __future__ import annotations

from delivery.coordination import scheduling_client, slots_key


def slot_holders(*, destination_id: int) -> int:
    """How many slots of the destination are held now (expired holders not counted)."""
    client = scheduling_client()
    now_seconds, now_micros = client.time()
    now_ms = now_seconds * 1000 + now_micros // 1000
    return int(client.zcount(slots_key(destination_id), f"({now_ms}", "+inf"))
