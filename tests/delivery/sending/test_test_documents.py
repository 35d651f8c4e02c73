"""The test document: the destination's mapped segments, or a sample one, sent once."""

from __future__ import annotations

import json

import pytest

from delivery.models import DeliveryKind, DeliveryStatus
from delivery.sending.rounds import send_test_document
from tests.delivery.pending_work import map_segments
from tests.delivery.sending.claims import SEGMENT, attempts_of
from tests.factories import DestinationFactory
from tests.local_partner import Reply

pytestmark = pytest.mark.django_db


def test_a_test_document_lists_the_mapped_segments_and_is_sent_once(partner):
    # Given a destination mapped to SEGMENT alone (the shared `destination` maps three)
    destination = DestinationFactory(url=partner.url, max_wait_ms=0)
    map_segments(destination, SEGMENT)
    partner.script = [Reply(status=500)]

    delivery = send_test_document(destination=destination)

    assert (delivery.kind, delivery.status) == (DeliveryKind.TEST, DeliveryStatus.FAILED)
    assert attempts_of(delivery) == [(1, 500, "status")]
    [user] = json.loads(partner.requests[0].body)["Users"]
    assert [(s["Segment_ID"], s["Status"]) for s in user["Segments"]] == [(str(SEGMENT), "1")]


def test_a_test_document_without_mappings_carries_a_sample_segment(partner):
    destination = DestinationFactory(url=partner.url)

    delivery = send_test_document(destination=destination)

    assert delivery.status == DeliveryStatus.DELIVERED
    [user] = json.loads(partner.requests[0].body)["Users"]
    assert len(user["Segments"]) == 1 and user["Segments"][0]["Status"] == "1"
