"""No per-row foreign-key checks on memberships and real-time states (issue 13); locks keep them.

PostgreSQL checked each new `Membership` row twice at commit (its device, its segment) and each new
`DestinationDevice` row once (its device), about 10 µs a check: 7 of the 24 s that 200,000 file lines
took to ingest, and the same share of every API ingestion. The references still hold, kept by locks
that every writer already takes or now takes (`delivery.intake.storage`):
- a device: every writer of a device's memberships and states holds the device's row lock first, and
  the only deletion of devices, erasure (`delivery.lifecycle.erasure`), locks them before it deletes
  their data;
- a segment: ingestion holds the segments it writes `FOR KEY SHARE` until it commits, and deleting a
  segment locks it `FOR UPDATE` before Django's cascade deletes its memberships
  (`destinations.signals`), so one waits for the other and no membership outlives its segment.
Reversing deletes any row the constraints would refuse, then adds them back.
"""

import django.db.models.deletion
from django.db import migrations, models


def keep_only_rows_with_their_references(apps, schema_editor):
    """Before the constraints come back (reversing): delete the rows they would refuse."""
    device = apps.get_model("delivery", "Device")
    segment = apps.get_model("destinations", "Segment")
    membership = apps.get_model("delivery", "Membership")
    membership.objects.exclude(device__in=device.objects.all()).delete()
    membership.objects.exclude(segment__in=segment.objects.all()).delete()
    apps.get_model("delivery", "DestinationDevice").objects.exclude(device__in=device.objects.all()).delete()


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
