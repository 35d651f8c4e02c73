"""The sweep (CONTRACT §6 `manage.py sweep`, and beat every minute): apply TTL and inactivity now.

In order: end expired memberships, end the memberships of devices not seen
for 120 days, then forget the devices whose "0"s are out. Each step is bounded
(chunks, `SKIP LOCKED`) and idempotent, so sweeps may overlap and repeat.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from delivery.lifecycle.erasure import ErasureResult, erase_forgotten_devices
from delivery.lifecycle.expiry import LifecycleResult, expire_memberships, leave_inactive_devices


@dataclass(frozen=True)
class SweepResult:
    expired: LifecycleResult
    inactive: LifecycleResult
    erasure: ErasureResult

    @property
    def destination_ids(self) -> set[int]:
        """The real-time destinations given "0"s to send."""
        return self.expired.destination_ids | self.inactive.destination_ids | self.erasure.destination_ids


def sweep(*, now: dt.datetime) -> SweepResult:
    """Run the three steps as of `now`; the caller wakes `destination_ids` once committed."""
    return SweepResult(
        expired=expire_memberships(now=now),
        inactive=leave_inactive_devices(now=now),
        erasure=erase_forgotten_devices(now=now),
    )
