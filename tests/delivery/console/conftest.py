"""Fixtures shared by the console tests: a viewer, an operator, a send task that records what it queues."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.delivery.console.console_clients import FakeTask, client_with_role


@pytest.fixture
def viewer(db) -> Client:
    return client_with_role("viewer", group="viewer")


@pytest.fixture
def operator(db) -> Client:
    return client_with_role("operator", group="operator")


@pytest.fixture
def send_task(monkeypatch) -> FakeTask:
    task = FakeTask()
    monkeypatch.setattr("delivery.tasks.send_delivery_task", task)
    return task
