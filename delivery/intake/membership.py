"""Apply valid events to the database (DESIGN.md "Membership rules", CONTRACT §2 and §4).

`apply_events` writes, in one transaction and with bulk statements: segments
named for the first time, devices (last sighting, regions), partner IDs, the
memberships, one `MembershipChange` row per change, and the real-time pending
marks of `DestinationDevice`. Its steps live beside it:
- `delivery.intake.merging`: the merging rules (the latest `datetime` wins, a
  disqualification wins a tie, opt-outs as disqualifications), no database;
- `delivery.intake.storage`: locking and writing devices, memberships, changes,
  partner IDs and erasure requests, in the order that keeps ingests from
  deadlocking;
- `delivery.intake.pending_marks`: which real-time destinations owe a send.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db import transaction

from delivery.intake import storage
from delivery.intake.events import Event, EventType
from delivery.intake.merging import opt_outs_as_disqualifications, plan_memberships
from delivery.intake.pending_marks import mark_pending


@dataclass(frozen=True)
class ApplyResult:
    events: int  # events applied (an opt-out of an unknown device is not)
    devices: int  # devices touched
    changes: int  # MembershipChange rows written
    partner_ids: int  # distinct partner IDs synced (new or known)
    destination_ids: set[int] = field(default_factory=set)  # destinations that got pending work


def apply_events(*, events: list[Event], now: dt.datetime) -> ApplyResult:
    """Store `events` (already valid) as of `now`; see the module docstring for the rules."""
    if not events:
        return ApplyResult(events=0, devices=0, changes=0, partner_ids=0)
    with transaction.atomic():
        segment_ids = {event.segment_id for event in events if event.segment_id is not None}
        ttl_days = storage.ensure_segments(segment_ids)
        known_devices = storage.upsert_and_lock_devices(events)
        applied = [event for event in events if event.aam_uuid in known_devices]
        current = storage.lock_memberships(applied)
        merged = applied + opt_outs_as_disqualifications(events=applied, current=current)
        states, changes = plan_memberships(events=merged, current=current, ttl_days=ttl_days)
        storage.write_memberships(states)
        storage.write_changes(changes)
        partner_ids = storage.write_partner_ids(applied)
        destination_ids = mark_pending(changes=changes, now=now)
        storage.request_erasures(applied, now=now)
    return ApplyResult(
        events=len(applied),
        devices=len(known_devices),
        changes=len(changes),
        partner_ids=partner_ids,
        destination_ids=destination_ids,
    )


def apply_opt_outs(*, events: list[Event], now: dt.datetime) -> ApplyResult:
    """Apply `opt_out` events alone: each ends every active membership of its device.

    An opt-out acts exactly as a disqualification, at the opt-out's `datetime`,
    of each segment the device is active in: the membership is left, a change
    is logged and each real-time destination mapping the segment is queued a
    "0". `apply_events` folds opt-outs into the same merge (see
    `delivery.intake.merging.opt_outs_as_disqualifications`), so that a batch
    mixing them with qualifications obeys "the latest `datetime` wins".

    Each opting-out device also gets a `DeviceErasure` request:
    `delivery.lifecycle.erasure` erases it, its memberships and partner IDs once its
    "0"s are out, and removes it from stored documents (CONTRACT §4).
    """
    return apply_events(events=[event for event in events if event.type is EventType.OPT_OUT], now=now)
