"""API shapes of the delivery log and of device profiles (CONTRACT §5). Read-only."""

from __future__ import annotations

import json
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from delivery.models import Attempt, Delivery, Device, Membership, PartnerId


class AttemptSerializer(serializers.ModelSerializer):
    status_code = serializers.IntegerField(allow_null=True, help_text="null when the partner did not answer.")
    reason = serializers.CharField(
        allow_null=True, help_text="null on success; else timeout, connection, tls, status or token."
    )

    class Meta:
        model = Attempt
        fields = ["number", "started_at", "duration_ms", "status_code", "reason", "error", "response_excerpt"]


class DeliverySerializer(serializers.ModelSerializer):
    """A delivery in the log, with its attempts in order."""

    attempts = AttemptSerializer(many=True, read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "id",
            "destination",
            "kind",
            "status",
            "user_count",
            "created_at",
            "finished_at",
            "redelivery_of",
            "attempts",
        ]


def parse_document(body: bytes | memoryview | None) -> Any:
    """Return the JSON document a delivery carries, or None when it holds none."""
    if not body:
        return None
    try:
        return json.loads(bytes(body))
    except ValueError:  # not JSON: a stored body is always built by aamdest, so this is a bug upstream
        return None


class DeliveryDetailSerializer(DeliverySerializer):
    """One delivery, with the document sent."""

    document = serializers.SerializerMethodField(help_text="The JSON document sent (CONTRACT §1).")

    class Meta(DeliverySerializer.Meta):
        fields = [*DeliverySerializer.Meta.fields, "document"]

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_document(self, delivery: Delivery) -> Any:
        return parse_document(delivery.body)


class RedeliverySerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The new delivery, of kind redelivery.")
    redelivery_of = serializers.IntegerField(help_text="The delivery whose document is sent again.")


class PartnerIdSerializer(serializers.ModelSerializer):
    class Meta:
        model = PartnerId
        fields = ["dpid", "dpuuid"]


class ProfileSegmentSerializer(serializers.ModelSerializer):
    segment_id = serializers.IntegerField(read_only=True)
    status = serializers.SerializerMethodField(help_text="1 active, 0 left.")
    expires_at = serializers.DateTimeField(allow_null=True, help_text="null: left, or never expires.")

    class Meta:
        model = Membership
        fields = ["segment_id", "status", "datetime", "expires_at"]

    def get_status(self, membership: Membership) -> int:
        return 1 if membership.is_active else 0


class ProfileSerializer(serializers.ModelSerializer):
    """A device: where and when it was seen, its partner IDs and its segments."""

    regions = serializers.ListField(
        child=serializers.IntegerField(), read_only=True, help_text="DCS region IDs."
    )
    partner_ids = PartnerIdSerializer(many=True, read_only=True)
    segments = ProfileSegmentSerializer(source="memberships", many=True, read_only=True)

    class Meta:
        model = Device
        fields = ["aam_uuid", "last_seen", "regions", "partner_ids", "segments"]
