"""delivery.lifecycle.expiry: a segment's new TTL moves its members' expiry, through the API and the admin."""

from __future__ import annotations

import datetime as dt

import pytest

from delivery.lifecycle.expiry import apply_segment_ttl, expire_memberships
from delivery.models import Membership
from destinations.models import Segment
from tests.delivery.lifecycle.memberships import T0, UUID, membership
from tests.delivery.lifecycle_events import apply, qualify
from tests.delivery.pending_work import NEWS, SPORTS

pytestmark = pytest.mark.django_db


# ---- a segment's TTL changes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("ttl_days", "expected"),
    [
        (10, T0 + dt.timedelta(days=10)),
        (1, dt.datetime(2026, 1, 12, tzinfo=dt.UTC)),
        (0, None),
    ],
)
def test_a_new_ttl_applies_to_the_segments_existing_memberships(clock, ttl_days, expected):
    # Given active members of SPORTS, a left one, and a member of another segment
    apply(qualify(UUID, SPORTS, at=T0), qualify("other", SPORTS, at=T0), qualify(UUID, NEWS, at=T0))
    Membership.objects.filter(device_id="other").update(is_active=False, expires_at=None)

    # When its TTL changes
    Segment.objects.filter(pk=SPORTS).update(ttl_days=ttl_days)
    updated = apply_segment_ttl(segment=Segment.objects.get(pk=SPORTS), chunk_size=1)

    # Then the active membership's expiry follows; the others do not move
    assert updated == 1
    assert membership(SPORTS).expires_at == expected
    assert membership(SPORTS, "other").expires_at is None
    assert membership(NEWS).expires_at == T0 + dt.timedelta(days=120)


def test_a_shorter_ttl_ends_memberships_at_the_next_sweep_dated_at_the_new_expiry(clock):
    # Given a membership 20 days old
    apply(qualify(UUID, SPORTS, at=T0))
    now = T0 + dt.timedelta(days=20)
    clock.move_to(now)

    # When its segment's TTL becomes 7 days and the sweep runs
    Segment.objects.filter(pk=SPORTS).update(ttl_days=7)
    apply_segment_ttl(segment=Segment.objects.get(pk=SPORTS))
    result = expire_memberships(now=now)

    # Then it ended 7 days after its qualification
    assert result.memberships == 1
    assert membership(SPORTS).datetime == T0 + dt.timedelta(days=7)


# ---- the interfaces that change a TTL ------------------------------------------------------


def test_changing_a_segments_ttl_through_the_api_moves_its_members_expiry(
    operator_client, clock, eager_tasks, django_capture_on_commit_callbacks
):
    # Given a member of SPORTS
    apply(qualify(UUID, SPORTS, at=T0))

    # When its TTL becomes 7 days through the API (and its task runs)
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.patch(f"/api/v1/segments/{SPORTS}/", {"ttl_days": 7}, format="json")

    # Then the profile shows the new expiry
    assert response.status_code == 200
    profile = operator_client.get(f"/api/v1/profiles/{UUID}/").json()
    assert [segment["expires_at"] for segment in profile["segments"]] == ["2026-01-17T15:30:00Z"]


def test_changing_a_segments_ttl_in_the_admin_moves_its_members_expiry(
    admin_client, clock, eager_tasks, django_capture_on_commit_callbacks
):
    # Given a member of SPORTS
    apply(qualify(UUID, SPORTS, at=T0))

    # When its TTL becomes never-expiring in the admin (and its task runs)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/destinations/segment/{SPORTS}/change/",
                                     {"name": "sports", "ttl_days": 0})

    # Then the membership no longer expires
    assert response.status_code == 302
    assert membership(SPORTS).expires_at is None


def test_the_api_answers_before_the_members_expiry_moves(operator_client, clock, monkeypatch,
                                                         django_capture_on_commit_callbacks):
    # Given a member of SPORTS, and a broker that only records what is queued
    apply(qualify(UUID, SPORTS, at=T0))
    queued: list[int] = []
    monkeypatch.setattr("delivery.tasks.apply_segment_ttl_change.delay", queued.append)

    # When its TTL becomes 7 days through the API
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.patch(f"/api/v1/segments/{SPORTS}/", {"ttl_days": 7}, format="json")

    # Then the request only queued the work
    assert response.status_code == 200
    assert queued == [SPORTS]
    assert membership(SPORTS).expires_at == T0 + dt.timedelta(days=120)
