"""The events of `scripts/bench_mix.py`'s workloads: synthetic, and the realistic mix (see its docstring)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

Event = dict[str, object]


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def synthetic(events: int, *, segment: int) -> tuple[list[Event], set[str]]:
    at = now_iso()
    body = [{"type": "qualification", "aam_uuid": f"synthetic-{n:08d}", "segment_id": segment, "datetime": at}
            for n in range(events)]
    return body, {str(event["aam_uuid"]) for event in body}


def mix_setup(
    devices: int, *, segments: list[int], rng: random.Random
) -> tuple[list[Event], dict[str, set[int]]]:
    """Half the devices get a partner ID; each is qualified into one to three segments."""
    at, events, memberships = now_iso(), [], {}
    for n in range(devices):
        aam_uuid = f"mix-{n:08d}"
        if n % 2 == 0:
            events.append({"type": "id_sync", "aam_uuid": aam_uuid, "dpid": 20914, "dpuuid": f"gaid-{n}"})
        memberships[aam_uuid] = set(rng.sample(segments, rng.randint(1, 3)))
        events += [{"type": "qualification", "aam_uuid": aam_uuid, "segment_id": segment, "datetime": at}
                   for segment in sorted(memberships[aam_uuid])]
    return events, memberships


def mix_events(
    events: int, *, memberships: dict[str, set[int]], segments: list[int], rng: random.Random
) -> tuple[list[Event], set[str]]:
    """Re-qualifications, qualifications and disqualifications in turn; the devices that owe a send."""
    at, body, owed = now_iso(), [], set()
    active = [(aam_uuid, segment) for aam_uuid, joined in memberships.items() for segment in sorted(joined)]
    rng.shuffle(active)
    leaving, staying = active[: events // 3 + 1], active[events // 3 + 1:]
    fresh = (f"mix-new-{n:08d}" for n in range(events))
    known = list(memberships)[:1000]
    for n in range(events):
        if n % 3 == 0:  # re-qualified within 3 days of its send: nothing to send
            aam_uuid, segment = staying[n % len(staying)]
            body.append({"type": "qualification", "aam_uuid": aam_uuid, "segment_id": segment,
                         "datetime": at})
            continue
        if n % 3 == 1:
            aam_uuid, segment = _new_membership(memberships, known=known, segments=segments, fresh=fresh,
                                                rng=rng)
            kind = "qualification"
        else:
            aam_uuid, segment = leaving.pop()
            kind = "disqualification"
        body.append({"type": kind, "aam_uuid": aam_uuid, "segment_id": segment, "datetime": at})
        owed.add(aam_uuid)
    return body, owed


def _new_membership(
    memberships: dict[str, set[int]], *, known: list[str], segments: list[int], fresh: Iterator[str],
    rng: random.Random,
) -> tuple[str, int]:
    """Half the time a known device into a segment it is not in, else a new device."""
    aam_uuid = rng.choice(known) if rng.random() < 0.5 else next(fresh)
    missing = sorted(set(segments) - memberships.setdefault(aam_uuid, set()))
    if not missing:
        aam_uuid = next(fresh)
        missing = segments
    segment = rng.choice(missing)
    memberships.setdefault(aam_uuid, set()).add(segment)
    return aam_uuid, segment
