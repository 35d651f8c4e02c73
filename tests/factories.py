"""factory-boy factories for the configuration models."""

from __future__ import annotations

import factory

from destinations.models import Destination, Mapping, Segment


class DestinationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Destination

    name = factory.Sequence(lambda n: f"partner-{n}")
    url = "https://partner.example.com/aam"
    client_id = "74323"
    user_dpid = 20914
    aam_destination_id = factory.Sequence(lambda n: 400 + n)
    max_wait_ms = 200
    retry_delay_ms = 50


class SegmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Segment
        django_get_or_create = ("id",)

    id = factory.Sequence(lambda n: 10_000 + n)
    name = factory.LazyAttribute(lambda segment: f"segment {segment.id}")


class MappingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Mapping

    destination = factory.SubFactory(DestinationFactory)
    segment = factory.SubFactory(SegmentFactory)
    value = factory.LazyAttribute(lambda mapping: str(mapping.segment.id))
