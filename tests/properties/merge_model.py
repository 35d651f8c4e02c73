"""The merge rules as a model (CONTRACT §2, §4.2), independent of the code under test."""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from delivery.intake.events import Event, EventType


def short(event: Event, *, base_minute: int = 0) -> str:
    """`Q device-a/201@1(onb)`: an event in a hypothesis report (minutes after the test's base)."""
    if event.type is EventType.ID_SYNC:
        return f"S {event.aam_uuid}={event.dpid}:{event.dpuuid}"
    kind = "Q" if event.type is EventType.QUALIFICATION else "D"
    minute = (event.datetime.minute - base_minute) % 60
    return f"{kind} {event.aam_uuid}/{event.segment_id}@{minute}{'(onb)' if event.onboarded else ''}"


def pair_of(event: Event) -> tuple[str, int]:
    return event.aam_uuid, event.segment_id


def winners(events: Iterable[Event]) -> dict[Hashable, Event]:
    """Per (device, segment), the event with the latest datetime, a disqualification winning a tie."""
    found: dict[Hashable, Event] = {}
    for event in events:
        if event.segment_id is None:
            continue
        rank = (event.datetime, event.type is EventType.DISQUALIFICATION)
        held = found.get(pair_of(event))
        if held is None or rank > (held.datetime, held.type is EventType.DISQUALIFICATION):
            found[pair_of(event)] = event
    return found


def expected_statuses(events: list[Event]) -> dict[Hashable, str]:
    """(device, segment) → the Status a partner holds last: "1" active, "0" entered then left.

    Absent: the device was never in the segment (no qualification), so nothing is sent.
    """
    qualified = {pair_of(event) for event in events if event.type is EventType.QUALIFICATION}
    return {
        pair: "1" if winner.type is EventType.QUALIFICATION else "0"
        for pair, winner in winners(events).items()
        if pair in qualified
    }
