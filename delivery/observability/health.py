"""GET /healthz (liveness) and GET /readyz (readiness): is this process able to work? (CONTRACT §5)

/healthz: 200 when the database and the broker (and the coordination Redis, when it is another
server) answer, else 503, with one entry per component, the age of the oldest pending device and
the age of beat's last tick, so that a probe sees a stuck pipeline or a dead scheduler as well as a
dead dependency. /readyz answers the same and also 503 while migrations are unapplied, naming
them: a load balancer sends a new web node traffic only once its schema is there. No
authentication: probes call them. Errors name the exception class only, never a URL or a password.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Min
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from kombu import Connection

from delivery.coordination import probe_client
from delivery.models import DestinationDevice
from delivery.observability.heartbeat import last_beat_tick

# As the Redis probes (delivery.coordination.PROBE): a hung broker must not hang the probe.
AMQP_PROBE_TIMEOUT_S = 1


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
    if settings.CELERY_BROKER_URL.startswith(("amqp://", "amqps://")):
        return check_amqp(settings.CELERY_BROKER_URL)
    return check_redis(settings.CELERY_BROKER_URL)


def check_amqp(url: str) -> dict[str, Any]:
    started = time.monotonic()
    try:
        with Connection(url, connect_timeout=AMQP_PROBE_TIMEOUT_S) as broker:
            broker.ensure_connection(max_retries=1, timeout=AMQP_PROBE_TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 -- kombu raises many kinds; each means "down"
        return {"ok": False, "error": error.__class__.__name__}
    return {"ok": True, "latency_ms": round((time.monotonic() - started) * 1000, 1)}


def check_redis(url: str) -> dict[str, Any]:
    started = time.monotonic()
    try:
        client = probe_client(url)
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
    oldest: dt.datetime | None = DestinationDevice.objects.aggregate(oldest=Min("pending_since"))["oldest"]
    if oldest is None:
        return None
    return round(max((timezone.now() - oldest).total_seconds(), 0.0), 3)


def beat_last_tick_age_s() -> float | None:
    """Seconds since beat's last tick; None when no beat ever ticked (or Redis does not answer)."""
    last = last_beat_tick()
    return None if last is None else round(max(time.time() - last, 0.0), 3)


def unapplied_migrations() -> list[str]:
    """`app.migration` names that the database lacks, in the order `migrate` would apply them."""
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{migration.app_label}.{migration.name}" for migration, _ in plan]


def components() -> dict[str, Any]:
    """Every component's answer, `ok` true when each dependency answers."""
    answer: dict[str, Any] = {"database": check_database(), "broker": check_broker()}
    if settings.AAMDEST_REDIS_URL != settings.CELERY_BROKER_URL:
        answer["redis"] = check_redis(settings.AAMDEST_REDIS_URL)
    backlog = None
    if answer["database"]["ok"]:
        try:
            backlog = oldest_pending_age_s()
        except DatabaseError:
            answer["database"] = {"ok": False, "error": "DatabaseError"}
    answer["ok"] = all(part["ok"] for part in answer.values())
    answer["oldest_pending_age_s"] = backlog
    answer["beat_last_tick_age_s"] = beat_last_tick_age_s()
    return answer


def answer_with(answer: dict[str, Any]) -> JsonResponse:
    healthy = answer.pop("ok")
    body = {"status": "ok" if healthy else "unavailable", **answer}
    return JsonResponse(body, status=200 if healthy else 503)


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    return answer_with(components())


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    answer = components()
    if answer["database"]["ok"]:
        try:
            unapplied = unapplied_migrations()
            answer["migrations"] = {"ok": not unapplied, "unapplied": unapplied}
        except DatabaseError as error:
            answer["migrations"] = {"ok": False, "error": error.__class__.__name__}
        answer["ok"] = answer["ok"] and answer["migrations"]["ok"]
    return answer_with(answer)
