"""GET /api/v1/profiles/{aam_uuid}/: what aamdest knows about one device (CONTRACT §5)."""

from __future__ import annotations

from django.db.models import Prefetch
from rest_framework import generics
from rest_framework.exceptions import NotFound, ValidationError

from delivery.api.serializers import ProfileSerializer
from delivery.models import Device, Membership, PartnerId


class ProfileView(generics.RetrieveAPIView):
    """A device's last sighting, regions, partner IDs and segments (1 active, 0 left)."""

    queryset = Device.objects.prefetch_related(
        Prefetch("partner_ids", queryset=PartnerId.objects.order_by("dpid", "id")),
        Prefetch("memberships", queryset=Membership.objects.order_by("segment_id")),
    )
    serializer_class = ProfileSerializer
    lookup_field = "aam_uuid"

    def get_object(self) -> Device:
        if "\x00" in self.kwargs["aam_uuid"]:  # PostgreSQL refuses NUL in text, even to compare it
            raise ValidationError({"aam_uuid": "aam_uuid must not contain a NUL character."})
        device = self.get_queryset().filter(aam_uuid=self.kwargs["aam_uuid"]).first()
        if device is None:
            raise NotFound(f"No device {self.kwargs['aam_uuid']!r} is known.")
        return device
