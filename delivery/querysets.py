"""Query methods that the models' managers carry (`PartnerId.objects`): plain reads, no writes."""

from __future__ import annotations

from django.db import models


class PartnerIdQuerySet(models.QuerySet):
    def dpuuids_by_device(self, *, device_ids: list[str], dpid: int) -> dict[str, list[str]]:
        """{aam_uuid: its partner IDs in the `dpid` namespace, oldest first}; devices with none are absent."""
        found: dict[str, list[str]] = {}
        rows = self.filter(device_id__any=device_ids, dpid=dpid).order_by("device_id", "id")
        for device_id, dpuuid in rows.values_list("device_id", "dpuuid"):
            found.setdefault(device_id, []).append(dpuuid)
        return found
