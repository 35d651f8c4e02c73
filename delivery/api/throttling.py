"""The events endpoint's throttle: a request rate per API token, off unless configured.

`AAMDEST_EVENTS_THROTTLE_RATE` (e.g. `50/s`) sets it. The count lives in Redis (the `throttle`
cache), so it holds across web processes and machines. Redis down opens the throttle rather than
refusing events: ingestion matters more than the limit.
"""

from __future__ import annotations

import hashlib
import logging

import redis
from django.conf import settings
from django.core.cache import caches
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

logger = logging.getLogger(__name__)


class EventsThrottle(SimpleRateThrottle):
    scope = "events"

    def __init__(self) -> None:
        self.cache = caches["throttle"]
        super().__init__()

    def get_rate(self) -> str | None:
        return settings.AAMDEST_EVENTS_THROTTLE_RATE

    def get_cache_key(self, request: Request, view: APIView) -> str:
        # Per token; a logged-in session (no token) counts per user.
        token = getattr(request.auth, "key", None)
        ident = hashlib.sha256(token.encode()).hexdigest()[:32] if token else f"user-{request.user.pk}"
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            return super().allow_request(request, view)
        except (redis.RedisError, OSError) as error:  # let the events in, and say so
            logger.warning("events throttle unavailable, not throttling: %s", error)
            return True
