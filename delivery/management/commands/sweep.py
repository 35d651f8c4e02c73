"""`manage.py sweep` (CONTRACT §6): apply TTL expiry and 120-day inactivity now.

The same work as beat's `delivery.tasks.sweep`, every minute: end expired
memberships, end the memberships of devices not seen for 120 days, forget the
devices whose "0"s are out (`delivery.lifecycle.sweeping`), then wake the real-time
destinations given "0"s to send. Safe to run at any time, alongside the
scheduler: a second sweep finds nothing the first one did.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from delivery import tasks
from delivery.lifecycle.sweeping import sweep


class Command(BaseCommand):
    help = "Apply TTL expiry and 120-day inactivity now, and forget the devices whose 0s are out."

    def handle(self, *args: Any, **options: Any) -> None:
        result = sweep(now=timezone.now())
        tasks.schedule_flushes(result.destination_ids)
        expired, inactive, erasure = result.expired, result.inactive, result.erasure
        self.stdout.write(
            f"Expired {expired.memberships} membership(s). "
            f"{inactive.devices} device(s) inactive for 120 days left {inactive.memberships} segment(s). "
            f"Erased {erasure.erased} device(s); {erasure.waiting} wait for their 0s to go out."
        )
