"""The log line each attempt writes: its outcome, no secret, one JSON object with AAMDEST_LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging

import pytest

from aamdest.logging import JsonFormatter
from delivery.sending.rounds import send_deliveries
from tests.delivery.sending.claims import KEY, claim
from tests.local_partner import Reply

pytestmark = pytest.mark.django_db


def test_one_log_line_per_attempt_with_the_outcome_and_no_secret(partner, destination, caplog):
    destination.auth_mode, destination.signing_key = "hmac", KEY
    destination.save()
    partner.script = [Reply(status=500), Reply(status=200)]
    [delivery] = claim(destination)

    with caplog.at_level(logging.INFO, logger="aamdest.delivery"):
        send_deliveries(destination=destination, deliveries=[delivery])

    records = [r for r in caplog.records if r.name == "aamdest.delivery"]
    assert [(r.delivery_id, r.attempt, r.status_code, r.reason) for r in records] == [
        (delivery.pk, 1, 500, "status"), (delivery.pk, 2, 200, None)
    ]
    assert all(r.destination == destination.pk and r.duration_ms >= 0 for r in records)
    signature = partner.requests[0].headers["X-Signature"]
    assert not any(KEY in r.getMessage() or signature in r.getMessage() for r in records)


def test_with_json_logs_each_attempt_is_one_json_object_with_its_fields(partner, destination, caplog):
    # Given AAMDEST_LOG_FORMAT=json's formatter and a partner failing once
    partner.script = [Reply(status=503), Reply(status=200)]
    [delivery] = claim(destination)

    # When the delivery is sent
    with caplog.at_level(logging.INFO, logger="aamdest.delivery"):
        send_deliveries(destination=destination, deliveries=[delivery])

    # Then each attempt's line is a JSON object naming destination, delivery, attempt and outcome
    formatter = JsonFormatter()
    lines = [json.loads(formatter.format(r)) for r in caplog.records if r.name == "aamdest.delivery"]
    assert [
        {key: line[key] for key in ("destination", "delivery_id", "attempt", "status_code", "reason")}
        for line in lines
    ] == [
        {"destination": destination.pk, "delivery_id": delivery.pk, "attempt": 1, "status_code": 503,
         "reason": "status"},
        {"destination": destination.pk, "delivery_id": delivery.pk, "attempt": 2, "status_code": 200,
         "reason": None},
    ]
    assert all(isinstance(line["duration_ms"], int) for line in lines)
    assert [line["level"] for line in lines] == ["WARNING", "INFO"]
