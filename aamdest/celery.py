"""The Celery app `aamdest`: workers send, beat keeps time (SPEC §6)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aamdest.settings")

app = Celery("aamdest")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
