"""/api/v1/deliveries/ (stub: replaced by the API work)."""

from rest_framework import viewsets

from delivery.models import Delivery


class DeliveryViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Delivery.objects.all()
