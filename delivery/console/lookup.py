"""Reading the delivery log for people: find a device, the deliveries that carried it, each answer.

Plain queries behind the console's device and delivery pages. They read a device's profile when it
exists and its deliveries through `DeliveryDevice`, which outlives the device (an erased or expired
device still shows what was sent about it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from django.db.models import OuterRef, QuerySet, Subquery

from delivery.models import Attempt, Delivery, DeliveryDevice, Device, Membership, PartnerId

# Known DCS regions (CONTRACT §1), shown beside their IDs.
REGION_NAMES = {3: "Singapore", 4: "São Paulo", 6: "Dublin", 7: "Virginia", 8: "Sydney", 9: "Oregon",
                11: "Tokyo", 12: "India"}


@dataclass(frozen=True)
class Profile:
    """What aamdest knows of a device; `device` is None when it was erased or never seen."""

    aam_uuid: str
    device: Device | None
    regions: list[tuple[int, str]] = field(default_factory=list)  # (region ID, its name or "")
    partner_ids: list[PartnerId] = field(default_factory=list)
    memberships: list[Membership] = field(default_factory=list)  # active first, then by segment


def find_devices(*, query: str) -> list[tuple[str, int | None]]:
    """(AAM_UUID, dpid) of the devices `query` names: an AAM_UUID (dpid None) or a partner's dpuuid."""
    if Device.objects.filter(pk=query).exists() or DeliveryDevice.objects.filter(aam_uuid=query).exists():
        return [(query, None)]
    partner_ids = PartnerId.objects.filter(dpuuid=query).order_by("device_id", "dpid")
    return list(partner_ids.values_list("device_id", "dpid").distinct()[:50])


def device_profile(*, aam_uuid: str) -> Profile:
    device = Device.objects.filter(pk=aam_uuid).first()
    if device is None:
        return Profile(aam_uuid=aam_uuid, device=None)
    return Profile(
        aam_uuid=aam_uuid,
        device=device,
        regions=[(region, REGION_NAMES.get(region, "")) for region in device.regions],
        partner_ids=list(device.partner_ids.order_by("dpid", "dpuuid")),
        memberships=list(device.memberships.select_related("segment").order_by("-is_active", "segment_id")),
    )


def with_last_answer(deliveries: QuerySet[Delivery]) -> QuerySet[Delivery]:
    """`deliveries` without their body, with their last attempt's `last_number`, `last_status_code`,
    `last_reason` and `last_error` (None when no attempt was made yet)."""
    last = Attempt.objects.filter(delivery=OuterRef("pk")).order_by("-number")
    return deliveries.defer("body").select_related("destination").annotate(
        last_number=Subquery(last.values("number")[:1]),
        last_status_code=Subquery(last.values("status_code")[:1]),
        last_reason=Subquery(last.values("reason")[:1]),
        last_error=Subquery(last.values("error")[:1]),
    )


def deliveries_carrying(*, aam_uuid: str) -> QuerySet[Delivery]:
    """Every delivery whose document held the device, newest first, with its last answer."""
    return with_last_answer(Delivery.objects.filter(devices__aam_uuid=aam_uuid))


def pretty_document(body: bytes | memoryview) -> str:
    """The delivery's JSON indented for reading; the raw text when it is not JSON."""
    text = bytes(body).decode("utf-8", errors="replace")
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text
