"""End to end: events in through the API, real Celery worker and beat, local HTTPS partners.

Each test starts beat and a worker (`celery_stack`), posts events to
`/api/v1/events/` and watches what the partner receives and what the delivery
log says. Times are measured with the partner's clock (`Received.at`, monotonic).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time

import pytest
from django.conf import settings
from django.utils import timezone

from delivery.models import Delivery, DeliveryStatus
from delivery.sending.documents import format_aam_time
from tests.delivery.pending_work import map_segments
from tests.e2e.steps import SEGMENT, ingest, qualify, user_ids, wait_until
from tests.factories import DestinationFactory
from tests.local_partner import Received, Reply

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ENDED = (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED)


def id_sync(aam_uuid: str, dpid: int, dpuuid: str, **fields) -> dict:
    return {"type": "id_sync", "aam_uuid": aam_uuid, "dpid": dpid, "dpuuid": dpuuid, **fields}


def ended_deliveries(destination, count: int, timeout_s: float) -> list[Delivery]:
    ended = Delivery.objects.filter(destination=destination, status__in=ENDED)
    wait_until(lambda: ended.count() >= count, timeout_s=timeout_s)
    return list(ended.order_by("id"))


def attempts_of(delivery: Delivery) -> list[tuple[int, int | None, str | None]]:
    return list(delivery.attempts.order_by("number").values_list("number", "status_code", "reason"))


@pytest.fixture
def destination(partner):
    destination = DestinationFactory(url=partner.url, max_wait_ms=300, retry_delay_ms=200)
    map_segments(destination, SEGMENT)
    return destination


FIRST, SECOND = "19393572368547369350319949416899715727", "0578240750487542456854736923319946899715232"


def ingest_two_devices(operator_client, *, at: dt.datetime, later: dt.datetime) -> None:
    """FIRST with two partner IDs enters 14356, enters and leaves 12176; SECOND enters 10329 twice."""
    iso = [at.isoformat(), later.isoformat()]
    ingest(operator_client, [
        id_sync(FIRST, 20914, "4250948725049857", datetime=iso[0]),
        id_sync(FIRST, 20915, "ios-id", datetime=iso[0]),
        qualify(FIRST, 14356, datetime=iso[1], regions=[9]),
        qualify(FIRST, 12176, datetime=iso[0], regions=[9]),
    ])
    ingest(operator_client, [
        id_sync(SECOND, 20914, "848457757347734", datetime=iso[0]),
        qualify(SECOND, 10329, datetime=iso[0], regions=[9]),
        qualify(SECOND, 10329, datetime=iso[0], regions=[6]),
    ])
    ingest(operator_client, [{"type": "disqualification", "aam_uuid": FIRST, "segment_id": 12176,
                              "datetime": iso[1]}])


def expected_document(*, at: dt.datetime, later: dt.datetime) -> dict:
    """The document `ingest_two_devices` leads to, without its ProcessTime."""
    return {
        "User_DPID": "20914",
        "Client_ID": "74323",
        "AAM_Destination_Id": "423",
        "User_count": "2",
        "Users": [
            {
                "AAM_UUID": FIRST,
                "DataPartner_UUID": "4250948725049857",
                "AAM_Regions": ["9"],
                "Segments": [
                    {"Segment_ID": "14356", "Status": "1", "DateTime": format_aam_time(later)},
                    {"Segment_ID": "12176", "Status": "0", "DateTime": format_aam_time(later)},
                ],
            },
            {
                "AAM_UUID": SECOND,
                "DataPartner_UUID": "848457757347734",
                "AAM_Regions": ["6", "9"],
                "Segments": [{"Segment_ID": "10329", "Status": "1", "DateTime": format_aam_time(at)}],
            },
        ],
    }


def test_the_partner_receives_the_exact_document(celery_stack, operator_client, partner):
    destination = DestinationFactory(
        url=partner.url, user_dpid=20914, client_id="74323", aam_destination_id=423, max_wait_ms=1000
    )
    map_segments(destination, 14356, 12176, 10329)
    at = timezone.now().replace(microsecond=0) - dt.timedelta(seconds=30)
    later = at + dt.timedelta(seconds=1)
    started = time.monotonic()
    ingest_two_devices(operator_client, at=at, later=later)

    [received] = partner.wait_for_requests(1, timeout_s=5)
    time.sleep(0.3)  # nothing else follows
    assert len(partner.requests) == 1
    document = json.loads(received.body)
    assert list(document) == [
        "ProcessTime", "User_DPID", "Client_ID", "AAM_Destination_Id", "User_count", "Users"
    ]
    process_time = document.pop("ProcessTime")
    assert process_time.endswith(f"UTC {timezone.now().year}")
    assert document == expected_document(at=at, later=later)
    assert [list(user) for user in document["Users"]] == [
        ["AAM_UUID", "DataPartner_UUID", "AAM_Regions", "Segments"]
    ] * 2
    [delivery] = ended_deliveries(destination, 1, timeout_s=5)
    assert delivery.status == DeliveryStatus.DELIVERED
    assert received.body == bytes(delivery.body)
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["X-AAMDest-Delivery-Id"] == str(delivery.document_id)
    assert received.headers["User-Agent"] == f"aamdest/{settings.VERSION}"
    assert 0.9 <= received.at - started <= 2.5  # it waited max_wait_ms for a fuller request


def test_25_devices_go_in_requests_of_10_10_and_5(celery_stack, operator_client, partner, destination):
    accepted = ingest(operator_client, [qualify(f"device-{index:02d}") for index in range(25)])

    requests = partner.wait_for_requests(3, timeout_s=5)

    counts = [json.loads(received.body)["User_count"] for received in requests]
    assert counts == ["10", "10", "5"]
    sent = sorted(aam_uuid for received in requests for aam_uuid in user_ids(received))
    assert sent == [f"device-{index:02d}" for index in range(25)]
    assert requests[1].at - accepted < 0.3  # full requests go at once
    assert 0.3 <= requests[2].at - accepted <= 0.3 + 1  # the remainder waits max_wait_ms
    assert [d.user_count for d in ended_deliveries(destination, 3, timeout_s=5)] == [10, 10, 5]


def test_a_204_is_a_failure_retried_once_then_failed(celery_stack, operator_client, partner, destination):
    partner.script = [Reply(status=204, body=b"")]
    ingest(operator_client, [qualify("device")])

    [delivery] = ended_deliveries(destination, 1, timeout_s=5)

    assert delivery.status == DeliveryStatus.FAILED
    assert attempts_of(delivery) == [(1, 204, "status"), (2, 204, "status")]
    first, second = partner.requests
    assert second.at - first.at >= 0.2  # retry_delay_ms
    assert first.body == second.body


def test_a_500_then_200_is_delivered_on_the_retry(celery_stack, operator_client, partner, destination):
    partner.script = [Reply(status=500, body=b"try again"), Reply(status=200)]
    ingest(operator_client, [qualify("device")])

    [delivery] = ended_deliveries(destination, 1, timeout_s=5)

    assert delivery.status == DeliveryStatus.DELIVERED
    assert attempts_of(delivery) == [(1, 500, "status"), (2, 200, None)]
    assert delivery.attempts.get(number=1).response_excerpt == "try again"


def test_a_partner_answering_in_3_5_s_times_out_on_both_attempts(celery_stack, operator_client, partner):
    destination = DestinationFactory(url=partner.url, max_wait_ms=0, retry_delay_ms=100, timeout_ms=3000)
    map_segments(destination, SEGMENT)
    partner.script = [Reply(delay_s=3.5)]
    ingest(operator_client, [qualify("device")])

    [delivery] = ended_deliveries(destination, 1, timeout_s=10)

    assert delivery.status == DeliveryStatus.FAILED
    assert attempts_of(delivery) == [(1, None, "timeout"), (2, None, "timeout")]
    durations = list(delivery.attempts.order_by("number").values_list("duration_ms", flat=True))
    assert all(2900 <= duration <= 3400 for duration in durations), durations
    first, second = partner.wait_for_requests(2)
    assert 3.0 <= second.at - first.at <= 3.8


def test_a_trickling_partner_is_cut_at_the_deadline(celery_stack, operator_client, partner):
    destination = DestinationFactory(url=partner.url, max_wait_ms=0, max_retries=0, timeout_ms=3000)
    map_segments(destination, SEGMENT)
    partner.script = [Reply(status=200, body=b"x" * 100, trickle_interval_s=0.1)]
    ingest(operator_client, [qualify("device")])

    [delivery] = ended_deliveries(destination, 1, timeout_s=6)

    assert delivery.status == DeliveryStatus.FAILED
    [attempt] = delivery.attempts.all()
    assert attempt.reason == "timeout"
    assert 2900 <= attempt.duration_ms <= 3400


def test_the_partner_can_verify_the_hmac_signature(celery_stack, operator_client, partner, destination):
    key = "sample_partner_private_key"
    destination.auth_mode, destination.signing_key, destination.signing_header = "hmac", key, "X-Partner-Sig"
    destination.save()

    def verify(received: Received) -> Reply:
        expected = base64.b64encode(hmac.new(key.encode(), received.body, hashlib.sha256).digest()).decode()
        return Reply(status=200 if received.headers.get("X-Partner-Sig") == expected else 403)

    partner.responder = verify
    ingest(operator_client, [qualify("device")])

    [delivery] = ended_deliveries(destination, 1, timeout_s=5)

    assert attempts_of(delivery) == [(1, 200, None)]
    assert delivery.status == DeliveryStatus.DELIVERED
