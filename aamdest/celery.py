"""The Celery app `aamdest`: workers send, beat keeps time (CONTRACT §6)."""

import os
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    task_postrun,
    task_prerun,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)
from django.conf import settings
from django.db import close_old_connections
from kombu import Exchange, Queue

from aamdest.redaction import install_on_handlers
from delivery.observability.worker_heartbeat import Heartbeat
from delivery.progress import note_progress
from delivery.shutdown import request_stop

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aamdest.settings")

app = Celery("aamdest")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Declared here so that a worker without -Q consumes every one of them.
QUEUES = ("realtime", "batch", "maintenance")
app.conf.task_queues = [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES]
app.autodiscover_tasks()


@after_setup_logger.connect
@after_setup_task_logger.connect
def redact_worker_logs(logger, **kwargs):
    # Celery replaces the handlers settings.LOGGING installed: mask credentials on its own too.
    install_on_handlers(logger=logger)


@task_prerun.connect
@task_postrun.connect
def recycle_database_connections(task=None, **kwargs):
    """Around each task, close this thread's connections that are broken, errored or past CONN_MAX_AGE.

    Like Django around a request: a kept connection is health-checked on its first
    use in the next task, so a thread never carries a broken one, and a task no
    longer opens a new PostgreSQL session (CELERY_DB_REUSE_MAX in settings).
    """
    if task is not None and getattr(task.request, "is_eager", False):
        return  # eager tasks run inside the caller's transaction and connection
    close_old_connections()


@task_postrun.connect
def note_task_ended(**kwargs: Any) -> None:
    """A task ended: the worker's heartbeat counts it as progress (`delivery.progress`)."""
    note_progress()


@worker_shutting_down.connect
def stop_claiming(**kwargs: Any) -> None:
    """SIGTERM (warm shutdown), in the main process: the pool's loops stop claiming and hand back.

    Celery then stops consuming, waits for the running tasks (each finishes its attempt in
    flight, at most the destination's timeout, and hands back its retries) and exits.
    """
    request_stop()


_heartbeats: list[Any] = []


@worker_ready.connect
def start_heartbeat(sender: Any = None, **kwargs: Any) -> None:
    """Prove every AAMDEST_WORKER_HEARTBEAT_S that the worker's pool runs (`manage.py worker_probe`)."""
    interval_s = settings.AAMDEST_WORKER_HEARTBEAT_S
    heartbeat = Heartbeat(hostname=sender.hostname, pool=sender.pool, interval_s=interval_s)
    heartbeat.start()
    _heartbeats.append(heartbeat)


@worker_shutdown.connect
def stop_heartbeat(**kwargs: Any) -> None:
    while _heartbeats:
        _heartbeats.pop().stop()


app.conf.beat_schedule = {
    **app.conf.beat_schedule,
    # Wakes destinations whose wait expired and re-sends dead workers' deliveries.
    # A tick not started within 5 s is dropped: the next one does its work.
    "delivery-tick": {"task": "delivery.tasks.tick", "schedule": 1.0, "options": {"expires": 5}},
    # The lifecycle (TTL expiry, 120-day inactivity, erasures), and erasures soon after an opt-out.
    "delivery-sweep": {"task": "delivery.tasks.sweep", "schedule": 60.0, "options": {"expires": 55}},
    "delivery-erase": {"task": "delivery.tasks.erase_devices", "schedule": 10.0, "options": {"expires": 9}},
    # Batch mode: start the batches due; delivery-log retention (AAMDEST_DELIVERY_LOG_DAYS).
    "delivery-batches": {
        "task": "delivery.tasks.start_due_batches", "schedule": 60.0, "options": {"expires": 55},
    },
    # Alerts (CONTRACT §7): circuit transitions, stale backlogs, reminders, sends and their retries.
    "delivery-alerts": {"task": "delivery.tasks.run_alerts", "schedule": 5.0, "options": {"expires": 4}},
    "delivery-alert-backlogs": {
        "task": "delivery.tasks.check_backlogs", "schedule": 30.0, "options": {"expires": 25},
    },
    "delivery-prune": {
        "task": "delivery.tasks.prune_deliveries", "schedule": 600.0, "options": {"expires": 300},
    },
}
