"""The PostgreSQL reader (its SQL shapes `Segments`) against the portable one, over random data."""

from __future__ import annotations

import datetime as dt
import random

import orjson
import pytest

from delivery.batch.reading import read_portable_users, read_postgresql
from delivery.models import Device, Membership, MembershipChange, PartnerId
from destinations.models import Segment

pytestmark = [pytest.mark.django_db, pytest.mark.postgresql_only]
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
DPID = 20914


def random_moment(rng: random.Random) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=rng.randrange(2**60 // 512))


def seed(rng: random.Random, segments: list[int]) -> None:
    """Devices with or without a row, regions repeated, partner IDs in two namespaces, memberships
    active or not and expired or not, several changes per (device, segment)."""
    for number in range(40):
        uuid = rng.choice(["u", "é", "a b", "\\q"]) + str(number)
        if rng.random() < 0.8:
            Device.objects.create(aam_uuid=uuid, last_seen=NOW, regions=rng.choices([3, 4, 9, 11, 100], k=3))
            for index in range(rng.choice([0, 0, 1, 3])):
                namespace = rng.choice([DPID, DPID + 1])
                PartnerId.objects.create(device_id=uuid, dpid=namespace, dpuuid=f"p{index}")
            for segment in rng.sample(segments, 3):
                expiry = rng.choice([None, NOW - dt.timedelta(days=1), NOW, NOW + dt.timedelta(days=3)])
                Membership.objects.create(device_id=uuid, segment_id=segment, is_active=rng.random() < 0.7,
                                          datetime=random_moment(rng), expires_at=expiry)
        for segment in rng.sample(segments, 3):
            for _ in range(rng.randint(1, 3)):
                MembershipChange.objects.create(aam_uuid=uuid, segment_id=segment,
                                                is_active=rng.random() < 0.5, datetime=random_moment(rng))


@pytest.mark.parametrize("seed_number", range(4))
def test_both_readers_write_the_same_user_entries(seed_number):
    # Given random devices, changes and memberships
    rng = random.Random(seed_number)
    segments = rng.sample(range(1, 10**12), 6)
    Segment.objects.bulk_create([Segment(id=segment) for segment in segments])
    seed(rng, segments)
    last = MembershipChange.objects.order_by("-id").values_list("id", flat=True).first()
    values = {segment: rng.choice(["v\"al", "NULL", "", "é☃", "a\\b"]) + str(segment) for segment in segments}
    query = {"until": last, "changed_segments": segments[:3], "full_segments": segments[3:5], "dpid": DPID,
             "now": NOW, "values": values, "chunk_size": 7}

    # When both read, from the start and from half-way through the changes
    for after in (0, last // 2):
        fast = [(device.aam_uuid, device.entries) for device in read_postgresql(after=after, **query)]
        portable = [(device.aam_uuid, device.entries) for device in read_portable_users(after=after, **query)]

        # Then the documents would be the same bytes
        assert fast
        assert orjson.dumps(fast) == orjson.dumps(portable)
