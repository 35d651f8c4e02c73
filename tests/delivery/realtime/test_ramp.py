"""After a circuit closes, the concurrency ramps up instead of flooding the partner (CONTRACT §7)."""

from __future__ import annotations

import pytest

from delivery.coordination import ramp_key, scheduling_client
from delivery.realtime import flush
from delivery.realtime.slots import RAMP_STEP_MS, allowance_after, ramp_allowance, start_ramp
from tests.delivery.sending.circuit_work import backlog, failing_destination
from tests.local_partner import Reply

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_redis")]


def test_the_allowance_doubles_every_step():
    assert [allowance_after(step * RAMP_STEP_MS) for step in range(6)] == [1, 2, 4, 8, 16, 32]
    assert allowance_after(RAMP_STEP_MS - 1) == 1
    assert allowance_after(10**12) == 2**30


def test_no_ramp_is_on_until_a_circuit_closes_and_it_ends_by_itself():
    assert ramp_allowance(destination_id=7) is None
    start_ramp(destination_id=7, full_requests=100)
    assert ramp_allowance(destination_id=7) == 1
    # It lasts until the allowance reaches the full 100 requests (2**7 = 128, after 7 steps), and a step more
    assert 7 * RAMP_STEP_MS < scheduling_client().pttl(ramp_key(7)) <= 8 * RAMP_STEP_MS


def test_right_after_a_close_a_flush_sends_one_request_a_claim(partner, monkeypatch):
    # Given a destination whose circuit just closed, with a backlog of 5 single-device requests
    partner.script = [Reply()]
    destination = failing_destination(partner)
    backlog(destination, 5, since=flush.timezone.now())
    start_ramp(destination_id=destination.pk, full_requests=100)
    claims: list[int] = []
    real_send = flush.send_deliveries

    def record(*, destination, deliveries):
        claims.append(len(deliveries))
        real_send(destination=destination, deliveries=deliveries)

    monkeypatch.setattr(flush, "send_deliveries", record)

    # When a flush drains it (within the first ramp step)
    flush.run_flush(destination_id=destination.pk)

    # Then each claim took one request, oldest first, and every device went out
    assert claims == [1] * 5
    assert len(partner.requests) == 5
