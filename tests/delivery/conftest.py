"""Fixtures shared by the delivery tests."""

from __future__ import annotations

import pytest

import delivery.tasks


@pytest.fixture
def woken(monkeypatch) -> list[set[int]]:
    """Record the destinations woken through `delivery.tasks.schedule_flushes` instead of queueing."""
    calls: list[set[int]] = []
    monkeypatch.setattr(delivery.tasks, "schedule_flushes", calls.append)
    return calls
