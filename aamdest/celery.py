"""The Celery app `aamdest`: workers send, beat keeps time (SPEC §6)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aamdest.settings")

app = Celery("aamdest")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    **app.conf.beat_schedule,
    # Wakes destinations whose wait expired and re-sends dead workers' deliveries.
    # A tick not started within 5 s is dropped: the next one does its work.
    "delivery-tick": {"task": "delivery.tasks.tick", "schedule": 1.0, "options": {"expires": 5}},
}
