"""/api/v1/destinations/, mappings/, segments/ (stub: replaced by the API work)."""

from rest_framework import viewsets

from destinations.models import Destination, Mapping, Segment


class DestinationViewSet(viewsets.ModelViewSet):
    queryset = Destination.objects.all()


class MappingViewSet(viewsets.ModelViewSet):
    queryset = Mapping.objects.all()


class SegmentViewSet(viewsets.ModelViewSet):
    queryset = Segment.objects.all()
