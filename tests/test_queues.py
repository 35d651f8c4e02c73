"""Queues and worker defaults live in the Celery app's configuration (CONTRACT §6)."""

from __future__ import annotations

from django.conf import settings

from aamdest.celery import QUEUES, app

REALTIME = {"delivery.tasks.flush_destination", "delivery.tasks.send_delivery_task", "delivery.tasks.tick",
            "delivery.tasks.probe_circuit"}
BATCH = {"delivery.tasks.start_due_batches", "delivery.tasks.send_batch_now", "delivery.tasks.send_due_batch",
         "delivery.tasks.send_stored_batch"}
MAINTENANCE = {"delivery.tasks.sweep", "delivery.tasks.erase_devices", "delivery.tasks.prune_deliveries",
               "delivery.tasks.apply_segment_ttl_change", "delivery.tasks.run_alerts",
               "delivery.tasks.check_backlogs", "delivery.tasks.resync_destination"}


def queue_of(task_name: str) -> str:
    return app.amqp.router.route({}, task_name)["queue"].name


def test_every_task_goes_to_its_queue():
    app.loader.import_default_modules()
    tasks = {name for name in app.tasks if name.startswith("delivery.")}

    assert tasks == REALTIME | BATCH | MAINTENANCE
    assert {name: queue_of(name) for name in tasks} == {
        **dict.fromkeys(REALTIME, "realtime"), **dict.fromkeys(BATCH, "batch"),
        **dict.fromkeys(MAINTENANCE, "maintenance"),
    }


def test_a_worker_without_q_consumes_all_three_queues():
    assert sorted(app.amqp.queues) == sorted(QUEUES)


def test_a_bare_worker_runs_enough_threads_for_isolation():
    assert app.conf.worker_pool == "threads"
    assert app.conf.worker_concurrency >= 2 * settings.AAMDEST_DESTINATION_CONCURRENCY
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_acks_late is True
