"""GET /healthz: is this process able to work? (SPEC §5)

200 when the database and the broker both answer, else 503, with one entry per
component and the age of the oldest pending device, so that a probe sees a
stuck pipeline as well as a dead dependency. No authentication: monitoring
probes call it. Errors name the exception class only, never a URL or a
password.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Min
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from delivery.coordination import probe_client
from delivery.models import DestinationDevice


def check_database() -> dict[str, Any]:
    started = time.monotonic()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as error:
        return {"ok": False, "error": error.__class__.__name__}
    return {"ok": True, "latency_ms": round((time.monotonic() - started) * 1000, 1)}


def check_broker() -> dict[str, Any]:
    started = time.monotonic()
    try:
        client = probe_client(settings.CELERY_BROKER_URL)
    except ValueError as error:
        return {"ok": False, "error": error.__class__.__name__}
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        return {"ok": False, "error": error.__class__.__name__}
    finally:
        client.close()
    return {"ok": True, "latency_ms": round((time.monotonic() - started) * 1000, 1)}


def oldest_pending_age_s() -> float | None:
    """Seconds since the oldest device became pending; None when none is."""
    oldest = DestinationDevice.objects.aggregate(oldest=Min("pending_since"))["oldest"]
    if oldest is None:
        return None
    return round(max((timezone.now() - oldest).total_seconds(), 0.0), 3)


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    database = check_database()
    broker = check_broker()
    backlog = None
    if database["ok"]:
        try:
            backlog = oldest_pending_age_s()
        except DatabaseError:
            database = {"ok": False, "error": "DatabaseError"}
    healthy = database["ok"] and broker["ok"]
    return JsonResponse(
        {
            "status": "ok" if healthy else "unavailable",
            "database": database,
            "broker": broker,
            "oldest_pending_age_s": backlog,
        },
        status=200 if healthy else 503,
    )
