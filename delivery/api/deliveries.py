"""/api/v1/deliveries/: the delivery log, read-only, and redelivery (CONTRACT §5)."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from delivery import services
from delivery.api.serializers import DeliveryDetailSerializer, DeliverySerializer, RedeliverySerializer
from delivery.models import Attempt, Delivery


class DeliveryFilter(filters.FilterSet):
    # A number, not a model choice: an unknown destination filters to an empty page, not a 400.
    destination = filters.NumberFilter(field_name="destination_id")
    aam_uuid = filters.CharFilter(
        method="filter_aam_uuid", help_text="Deliveries whose document holds this device."
    )

    class Meta:
        model = Delivery
        fields = ["destination", "status", "kind", "aam_uuid"]

    def filter_aam_uuid(self, queryset: QuerySet[Delivery], name: str, value: str) -> QuerySet[Delivery]:
        # One DeliveryDevice row per (delivery, device): the join cannot repeat a delivery.
        return queryset.filter(devices__aam_uuid=value)


class DeliveryViewSet(viewsets.ReadOnlyModelViewSet):
    """Every request sent to a partner, newest first, with its attempts in order."""

    queryset = Delivery.objects.prefetch_related(
        Prefetch("attempts", queryset=Attempt.objects.order_by("number"))
    )
    filterset_class = DeliveryFilter
    # Redelivering creates a delivery (destinations.permissions).
    action_permissions = {"redeliver": "delivery.add_delivery"}

    def get_queryset(self) -> QuerySet[Delivery]:
        queryset = super().get_queryset()
        if self.action == "list":
            queryset = queryset.defer("body")  # documents can be large; only the detail shows them
        return queryset

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        return DeliverySerializer if self.action == "list" else DeliveryDetailSerializer

    @extend_schema(
        request=None,
        responses={
            202: RedeliverySerializer,
            409: OpenApiResponse(description="The original delivery is still pending."),
        },
    )
    @action(detail=True, methods=["post"])
    def redeliver(self, request: Request, pk: Any = None) -> Response:
        """Send the same document again as a new delivery of kind `redelivery`."""
        original = self.get_object()
        try:
            redelivery = services.redeliver(delivery=original)
        except services.RedeliveryConflict as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        return Response(
            {"id": redelivery.id, "redelivery_of": redelivery.redelivery_of_id},
            status=status.HTTP_202_ACCEPTED,
        )
