"""delivery.dialect: the same meaning on PostgreSQL and on SQLite (`make test` runs this file on both)."""

from __future__ import annotations

import pytest
from django.db import transaction

from delivery import bulk, dialect
from delivery.models import DeliveryDevice, MembershipChange
from destinations.models import Segment

pytestmark = pytest.mark.django_db


def segment(id_: int, ttl_days: int) -> dict[str, object]:
    return {"id": id_, "name": "", "ttl_days": ttl_days}


def test_bulk_write_inserts_then_skips_or_updates_the_rows_in_conflict():
    # Given two segments written
    bulk.bulk_write(Segment, [segment(1, 5), segment(2, 6)])

    # When one is written again with nothing to update, then with its TTL to update
    bulk.bulk_write(Segment, [segment(1, 7), segment(3, 9)], unique=("id",))
    skipped = dict(Segment.objects.values_list("id", "ttl_days"))
    bulk.bulk_write(Segment, [segment(1, 8)], unique=("id",), update=("ttl_days",))

    # Then the first kept its TTL, the second took the new one, and timestamps were filled in
    assert skipped == {1: 5, 2: 6, 3: 9}
    assert dict(Segment.objects.values_list("id", "ttl_days")) == {1: 8, 2: 6, 3: 9}
    assert not Segment.objects.filter(created_at__isnull=True).exists()


def test_the_locks_can_be_taken_inside_one_transaction():
    with transaction.atomic():
        dialect.lock_table_against_writers(MembershipChange, lock_timeout="5s")
        dialect.advisory_xact_lock(4242)

        # A transaction's own exclusive lock does not keep it from the shared one
        assert dialect.try_advisory_xact_locks_shared([4242, 4243]) is True
        assert dialect.try_advisory_xact_locks_shared([]) is True


def test_percentiles_count_and_interpolate_per_group():
    # Given two groups of values
    rows = [("a", 1.0), ("a", 3.0), ("b", 10.0)]

    # When
    found = dialect.percentiles_in_python(rows, fractions=(0.5, 1.0))

    # Then
    assert found == {"a": (2, [2.0, 3.0]), "b": (1, [10.0, 10.0])}


@pytest.mark.parametrize("texts", [
    pytest.param(["plain-1", "plain-2"], id="plain: one block of COPY text"),
    pytest.param(["plain", "back\\slash", "tab\there", "new\nline", "\\N", "\\."], id="specials: escaped"),
])
def test_insert_pairs_stores_each_text_as_given(texts):
    # When pairs are inserted (no delivery needed: DeliveryDevice has no database foreign key)
    rows = [(number, text) for number, text in enumerate(texts, start=1)]
    bulk.insert_pairs(DeliveryDevice, columns=("delivery_id", "aam_uuid"), rows=rows, batch_size=2)

    # Then each reads back as it was, none turned into an escape, a NULL or the end of the data
    assert list(DeliveryDevice.objects.order_by("delivery_id").values_list("delivery_id", "aam_uuid")) == rows
