"""No per-row foreign-key checks on memberships and real-time states (issue 13); locks keep them.

PostgreSQL checked each new `Membership` row twice at commit (its device, its segment) and each new
`DestinationDevice` row once (its device), about 10 µs a check: 7 of the 24 s that 200,000 file lines
took to ingest, and the same share of every API ingestion. The references still hold, kept by locks
that every writer already takes or now takes (`delivery.intake.storage`):
- a device: every writer of a device's memberships and states holds the device's row lock first, and
  the only deletion of devices, erasure (`delivery.lifecycle.erasure`), locks them before it deletes
  their data;
- a segment: ingestion holds the segments it writes `FOR KEY SHARE` until it commits, and deleting a
  segment (`destinations.services.delete_segments`, the admin's and the API's) locks it `FOR UPDATE`
  before Django's cascade deletes its memberships, so one waits for the other and no membership
  outlives its segment.
Reversing deletes any row the constraints would refuse, then adds them back.
"""

import django.db.models.deletion
from django.db import migrations, models

ORPHANS = [  # (table, column, referenced table, its key)
    ("delivery_membership", "device_id", "delivery_device", "aam_uuid"),
    ("delivery_membership", "segment_id", "destinations_segment", "id"),
    ("delivery_destinationdevice", "device_id", "delivery_device", "aam_uuid"),
]


def keep_only_rows_with_their_references(apps, schema_editor):
    """Before the constraints come back (reversing): delete the rows they would refuse.

    NOT EXISTS: an anti-join, where Django's `exclude(…__in=…)` would probe a list of every device
    once per row.
    """
    with schema_editor.connection.cursor() as cursor:
        for table, column, referenced, key in ORPHANS:
            cursor.execute(
                f"DELETE FROM {table} AS t WHERE NOT EXISTS "  # noqa: S608 - constant names
                f"(SELECT 1 FROM {referenced} AS r WHERE r.{key} = t.{column})"
            )


class Migration(migrations.Migration):

    dependencies = [
        ('delivery', '0008_destination_device_index'),
        ('destinations', '0006_circuit_breaker'),
    ]

    operations = [
        migrations.AlterField(
            model_name='destinationdevice',
            name='device',
            field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, related_name='destination_states', to='delivery.device'),
        ),
        migrations.AlterField(
            model_name='membership',
            name='device',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='memberships', to='delivery.device'),
        ),
        migrations.AlterField(
            model_name='membership',
            name='segment',
            field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, related_name='memberships', to='destinations.segment'),
        ),
        # Last, so that reversing runs it first, before the constraints come back.
        migrations.RunPython(migrations.RunPython.noop, keep_only_rows_with_their_references),
    ]
