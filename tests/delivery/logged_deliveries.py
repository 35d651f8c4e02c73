"""Deliveries in the log with a fixed document, for the API and admin tests."""

from __future__ import annotations

import json

from django.utils import timezone

from delivery.models import Attempt, Delivery, DeliveryDevice
from tests.factories import DestinationFactory


def document_for(*aam_uuids: str) -> dict:
    users = [
        {
            "AAM_UUID": aam_uuid,
            "DataPartner_UUID": "",
            "AAM_Regions": ["9"],
            "Segments": [{"Segment_ID": "14356", "Status": "1", "DateTime": "Wed Jul 27 16:17:22 UTC 2016"}],
        }
        for aam_uuid in aam_uuids
    ]
    return {
        "ProcessTime": "Wed Jul 27 16:17:42 UTC 2016",
        "User_DPID": "20914",
        "Client_ID": "74323",
        "AAM_Destination_Id": "423",
        "User_count": str(len(users)),
        "Users": users,
    }


def make_delivery(
    *,
    destination=None,
    aam_uuids=("111",),
    status="delivered",
    kind="realtime",
    attempts=(200,),
    created_at=None,
) -> Delivery:
    """A delivery of a document holding `aam_uuids`, with one attempt per status code (None: no answer)."""
    destination = destination or DestinationFactory()
    now = timezone.now()
    made = Delivery.objects.create(
        destination=destination,
        kind=kind,
        status=status,
        user_count=len(aam_uuids),
        body=json.dumps(document_for(*aam_uuids)).encode(),
        finished_at=None if status == "pending" else now,
    )
    if created_at is not None:
        Delivery.objects.filter(pk=made.pk).update(created_at=created_at)
    DeliveryDevice.objects.bulk_create(DeliveryDevice(delivery=made, aam_uuid=a) for a in aam_uuids)
    for number, code in enumerate(attempts, start=1):
        Attempt.objects.create(
            delivery=made,
            number=number,
            started_at=now,
            duration_ms=10 * number,
            status_code=code,
            reason=None if code == 200 else ("timeout" if code is None else "status"),
            error="" if code == 200 else "it failed",
            response_excerpt="OK" if code == 200 else "",
        )
    return made
