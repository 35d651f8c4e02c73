"""A write the database refuses is read alike on PostgreSQL and SQLite (`make run`'s fallback)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from destinations.models import Destination, Mapping, Segment
from destinations.services import violated_constraint
from tests.factories import DestinationFactory, MappingFactory, SegmentFactory

pytestmark = pytest.mark.django_db


def refusal_of(write) -> str | None:
    with pytest.raises(IntegrityError) as refused, transaction.atomic():
        write()
    return violated_constraint(refused.value)


def test_each_constraint_is_named_as_postgresql_names_it():
    destination, segment = DestinationFactory(name="Acme"), SegmentFactory(id=7)
    mapping = MappingFactory(destination=destination, segment=segment)

    assert refusal_of(lambda: DestinationFactory(name="Acme")) == "destinations_destination_name_key"
    assert refusal_of(lambda: Segment.objects.create(id=7)) == "destinations_segment_pkey"
    assert refusal_of(lambda: Mapping.objects.create(destination=destination, segment=segment,
                                                     value="x")) == "one_mapping_per_pair"
    assert refusal_of(lambda: Mapping.objects.filter(pk=mapping.pk).update(
        end_date=mapping.start_date.replace(year=mapping.start_date.year - 1))) == "mapping_dates_in_order"
    assert Destination.objects.count() == 1
