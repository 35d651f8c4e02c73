"""POST /api/v1/events/ (stub: replaced by the ingestion work)."""

from rest_framework.views import APIView


class EventsView(APIView):
    required_permission = "delivery.add_device"
