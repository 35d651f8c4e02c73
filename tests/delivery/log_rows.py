"""Delivery-log rows for the console, statistics and metrics tests, written as the sender would."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus

from delivery.models import Attempt, Delivery, DeliveryDevice, DeliveryKind, DeliveryStatus
from delivery.sending.documents import SegmentStatus, UserObject, build_document
from destinations.models import Destination


@dataclass(frozen=True)
class Try:
    """One attempt: None/None/duration is a success (200).

    The failures below carry the error texts that delivery.sending.http and
    delivery.sending.tokens write, so the pages show what an operator really reads.
    """

    duration_ms: int = 80
    status_code: int | None = 200
    reason: str | None = None
    error: str = ""
    response_excerpt: str = "OK"


OK = Try()
TIMEOUT = Try(duration_ms=3000, status_code=None, reason="timeout",
              error="no complete answer within 3000 ms (waiting for the status line)", response_excerpt="")
TOKEN_FAILED = Try(duration_ms=150, status_code=None, reason="token", response_excerpt="",
                   error="token endpoint failed: partner answered 500 Internal Server Error")


def status(code: int, *, duration_ms: int = 120, excerpt: str = "") -> Try:
    """A non-200 answer, with the error `delivery.sending.http` writes for it."""
    return Try(duration_ms=duration_ms, status_code=code, reason="status",
               error=f"partner answered {code} {HTTPStatus(code).phrase}", response_excerpt=excerpt)


def log_delivery(
    destination: Destination,
    *,
    created_at: dt.datetime,
    outcome: str = DeliveryStatus.DELIVERED,
    tries: Sequence[Try] = (OK,),
    aam_uuids: Sequence[str] = ("device-1",),
    kind: str = DeliveryKind.REALTIME,
    redelivery_of: Delivery | None = None,
) -> Delivery:
    """A delivery of `destination` carrying `aam_uuids`, with one Attempt row per try."""
    users = [UserObject(aam_uuid=aam_uuid, partner_uuid="", regions=[9],
                        segments=[SegmentStatus(segment_id="14356", status="1", datetime=created_at)])
             for aam_uuid in aam_uuids]
    delivery = Delivery.objects.create(
        destination=destination,
        kind=kind,
        status=outcome,
        body=build_document(user_dpid=destination.user_dpid, client_id=destination.client_id,
                            aam_destination_id=destination.aam_destination_id, users=users,
                            process_time=created_at),
        user_count=len(users),
        redelivery_of=redelivery_of,
        finished_at=None if outcome == DeliveryStatus.PENDING else created_at + dt.timedelta(seconds=1),
    )
    Delivery.objects.filter(pk=delivery.pk).update(created_at=created_at)  # auto_now_add ignores the value
    DeliveryDevice.objects.bulk_create(DeliveryDevice(delivery=delivery, aam_uuid=uuid) for uuid in aam_uuids)
    Attempt.objects.bulk_create(
        Attempt(delivery=delivery, number=number, started_at=created_at + dt.timedelta(seconds=number - 1),
                duration_ms=attempt.duration_ms, status_code=attempt.status_code, reason=attempt.reason,
                error=attempt.error, response_excerpt=attempt.response_excerpt)
        for number, attempt in enumerate(tries, start=1)
    )
    delivery.refresh_from_db()
    return delivery
