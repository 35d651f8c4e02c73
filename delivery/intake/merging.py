"""Membership merging rules (DESIGN.md "Membership rules", CONTRACT §2 and §4): pure functions, no database.

Per (device, segment), events apply in `datetime` order, a disqualification
after a qualification of the same instant (it wins the tie). An event older
than the membership's `datetime` changes nothing; leaving a segment the device
is not active in sends nothing and logs no change, but stores an inactive
membership at the disqualification's `datetime`, so that a qualification older
than it, arriving later, cannot re-enter the segment: it logs that exit
instead, once (`_late_qualification`), so the outcome is the same whatever the
order of arrival.

Opt-outs: each becomes a disqualification, at its `datetime`, of every segment
its device may be in, merged with the other events
(`opt_outs_as_disqualifications`). Those disqualifications are never onboarded,
whatever the opt-out's flag: privacy "0"s go to every destination, real-time
ones included (CONTRACT §4).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from delivery.intake.events import Event, EventType

Key = tuple[str, int]  # (aam_uuid, segment_id)


class ChangeKind(StrEnum):
    ENTERED = "entered"  # was not active: sends "1"
    REFRESHED = "refreshed"  # was active already: new DateTime and TTL
    LEFT = "left"  # was active: sends "0"


@dataclass(frozen=True, slots=True)
class MembershipState:
    is_active: bool
    datetime: dt.datetime
    qualified_at: dt.datetime | None
    expires_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Change:
    aam_uuid: str
    segment_id: int
    kind: ChangeKind
    datetime: dt.datetime
    onboarded: bool


def compute_expires_at(*, qualified_at: dt.datetime, ttl_days: int) -> dt.datetime | None:
    """When a membership qualified at `qualified_at` ends (CONTRACT §4); None: never.

    `ttl_days` × 24 h later, except `ttl_days = 1`: 00:00 UTC two days after the
    UTC date of the qualification (Adobe's `24 + (24 - H)` hours).
    """
    if ttl_days == 0:
        return None
    if ttl_days == 1:
        day = qualified_at.astimezone(dt.UTC).date() + dt.timedelta(days=2)
        return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return qualified_at + dt.timedelta(days=ttl_days)


def plan_memberships(
    *, events: Iterable[Event], current: dict[Key, MembershipState], ttl_days: dict[int, int]
) -> tuple[dict[Key, MembershipState], list[Change]]:
    """Merge `events` into the `current` memberships.

    `ttl_days` maps each qualified segment to its TTL. Returns the new state
    of every membership that changed and the changes, ordered by `datetime` (a
    disqualification after a qualification of the same instant), which is the
    order they took effect in.
    """
    by_key: dict[Key, list[Event]] = defaultdict(list)
    for event in events:
        if event.segment_id is not None:
            by_key[(event.aam_uuid, event.segment_id)].append(event)
    states: dict[Key, MembershipState] = {}
    changes: list[Change] = []
    for key, key_events in by_key.items():
        state = current.get(key)
        if len(key_events) > 1:
            key_events.sort(key=_merge_order)
        for event in key_events:
            previous = state
            kind, state = _apply_one(state, event, segment_id=key[1], ttl_days=ttl_days)
            if state is not previous:
                states[key] = state
            if kind is not None:
                # The new state's datetime: the event's, or the stored exit's for a late qualification.
                changes.append(Change(key[0], key[1], kind, state.datetime, event.onboarded))
    changes.sort(key=lambda change: (change.datetime, change.kind is ChangeKind.LEFT))
    return states, changes


def _merge_order(event: Event) -> tuple[dt.datetime, bool]:
    return event.datetime, event.type is EventType.DISQUALIFICATION


def _apply_one(
    state: MembershipState | None, event: Event, *, segment_id: int, ttl_days: dict[int, int]
) -> tuple[ChangeKind | None, MembershipState]:
    """Apply `event` (of `segment_id`, its key's segment) to `state`; the change it makes, if any."""
    if event.type is EventType.QUALIFICATION:
        if state is not None and event.datetime <= state.datetime:
            return _late_qualification(state, event)
        kind = ChangeKind.REFRESHED if state is not None and state.is_active else ChangeKind.ENTERED
        expires_at = compute_expires_at(qualified_at=event.datetime, ttl_days=ttl_days[segment_id])
        return kind, MembershipState(True, event.datetime, event.datetime, expires_at)
    if state is not None and event.datetime < state.datetime:
        return None, state
    if state is None or not state.is_active:
        # Leaving a segment the device is not in sends nothing, but the
        # disqualification's datetime is kept so that an older qualification
        # arriving later cannot re-enter it (the latest datetime wins,
        # whatever the order of arrival).
        if state is not None and event.datetime == state.datetime:
            return None, state
        qualified_at = state.qualified_at if state is not None else None
        return None, MembershipState(False, event.datetime, qualified_at, None)
    return ChangeKind.LEFT, MembershipState(False, event.datetime, state.qualified_at, None)


def _late_qualification(state: MembershipState, event: Event) -> tuple[ChangeKind | None, MembershipState]:
    """A qualification not newer than the stored state (issue 10: the same outcome whatever the order).

    Usually a duplicate, or a tie a disqualification won: nothing. But when the
    stored state is a disqualification of a segment the device had not entered
    (inactive, never qualified), this qualification shows the device was in the
    segment until then: that disqualification left it, so the exit is logged now,
    at its datetime, as if the events had arrived in datetime order ("0").
    """
    if state.is_active or state.qualified_at is not None:
        return None, state
    return ChangeKind.LEFT, MembershipState(False, state.datetime, event.datetime, None)


def opt_outs_as_disqualifications(
    *, events: list[Event], current: dict[Key, MembershipState]
) -> list[Event]:
    """One disqualification per opt-out and segment the device may be in by then, never onboarded."""
    opt_outs = [event for event in events if event.type is EventType.OPT_OUT]
    if not opt_outs:
        return []
    segments: dict[str, set[int]] = defaultdict(set)
    for aam_uuid, segment_id in current:
        segments[aam_uuid].add(segment_id)
    for event in events:
        if event.segment_id is not None:
            segments[event.aam_uuid].add(event.segment_id)
    return [
        Event(type=EventType.DISQUALIFICATION, aam_uuid=opt_out.aam_uuid, datetime=opt_out.datetime,
              onboarded=False, segment_id=segment_id)
        for opt_out in opt_outs
        for segment_id in sorted(segments[opt_out.aam_uuid])
    ]
