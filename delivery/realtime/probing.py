"""Probing an open circuit, and waking a destination whose circuit closed (CONTRACT §7).

Beat's `tick` queues `delivery.tasks.probe_circuit` for each destination whose
next probe has come (`delivery.sending.circuit.find_due_probe_ids`); `run_probe`
then races for it (`circuit.take_probe`: one winner over every worker and
machine) and sends one attempt: the oldest pending request, claimed as any
claim (`delivery.realtime.claiming`, oldest first), or the test document when
nothing is pending. Its answer closes the circuit or re-opens it for twice as
long (`delivery.sending.circuit.end_probe`).

Once the circuit closes, by a probe or by hand, `wake_after_close` starts the
destination's concurrency ramp (`delivery.realtime.slots.start_ramp`) and
queues a flush; the tick leases its parked deliveries again.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.utils import timezone

from delivery.realtime.claiming import claim_due_requests
from delivery.realtime.flush import CLAIM_MAX_REQUESTS
from delivery.realtime.scheduling import schedule_flushes
from delivery.realtime.slots import start_ramp
from delivery.sending import circuit
from delivery.sending.rounds import send_probe, send_test_document

logger = logging.getLogger("aamdest.delivery")


def run_probe(*, destination_id: int) -> bool | None:
    """Probe the destination if its probe is due and this worker wins it; True: the circuit closed.

    None: nothing was probed (not due, or another worker probes it).
    """
    probe = circuit.take_probe(destination_id=destination_id, now=timezone.now())
    if probe is None:
        return None
    destination = probe.destination
    logger.info("destination %s: probing its open circuit", destination_id)
    deliveries = claim_due_requests(destination=destination, now=timezone.now(), max_requests=1, probe=True)
    if deliveries:
        send_probe(probe=probe, delivery=deliveries[0])
    else:
        send_test_document(destination=destination, probe=probe)
    closed = not circuit.is_open(destination)
    if closed:
        logger.info("destination %s: the probe was answered 200; the circuit is closed", destination_id)
        wake_after_close(destination_id)
    else:
        logger.warning("destination %s: the probe failed; next probe at %s", destination_id,
                       destination.circuit_next_probe_at)
    return closed


def wake_after_close(destination_id: int) -> None:
    """Start the destination's ramp and queue a flush: its backlog drains, oldest first."""
    # The ramp ends once every slot may hold a full claim.
    start_ramp(destination_id=destination_id,
               full_requests=settings.AAMDEST_DESTINATION_CONCURRENCY * CLAIM_MAX_REQUESTS)
    schedule_flushes({destination_id})
