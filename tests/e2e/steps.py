"""Steps the end-to-end tests share: post events, wait for an outcome, read what a partner got."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from tests.local_partner import Received

SEGMENT = 14356


def wait_until(condition: Callable[[], object], *, timeout_s: float, interval_s: float = 0.05) -> object:
    """Return `condition()`'s first truthy value; AssertionError when none comes within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s")


def ingest(client, events: list[dict]) -> float:
    """POST the events; return when they were accepted (monotonic clock)."""
    response = client.post("/api/v1/events/", events, format="json")
    assert response.status_code == 202, response.content
    return time.monotonic()


def qualify(aam_uuid: str, segment_id: int = SEGMENT, **fields) -> dict:
    return {"type": "qualification", "aam_uuid": aam_uuid, "segment_id": segment_id, **fields}


def user_ids(received: Received) -> list[str]:
    return [user["AAM_UUID"] for user in json.loads(received.body)["Users"]]
