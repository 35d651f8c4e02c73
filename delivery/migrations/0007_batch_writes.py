"""Cheaper batch writes (issue 13): no per-row foreign-key check on `DeliveryDevice`, lz4 bodies.

- `DeliveryDevice.delivery` loses its database constraint: a batch writes a row per device, and
  PostgreSQL checked each one at commit, 11 µs a row (11 s of a million-device batch). The rows are
  written only in the transaction that creates their delivery, and deleted with it by Django's
  cascade (pruning, a destination deleted), so nothing can leave one behind.
- On PostgreSQL built with lz4, `Delivery.body` is compressed with lz4 rather than pglz: storing a
  2 MB batch document took 11.5 ms with pglz and 2.7 ms with lz4 (the stored size grows from 0.07 to
  0.11 MB). Rows written before keep their compression; both read back the same. Setting it takes
  an ACCESS EXCLUSIVE lock on `delivery_delivery` for an instant, after the writes in progress
  (a batch cut can be one): migrate when no cut runs (docs/DEPLOY.md). A dump carries the setting:
  restore it on a server without lz4 with `pg_restore --no-toast-compression`.
"""

import django.db.models.deletion
from django.db import migrations, models


def compress_bodies_with_lz4(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        row = cursor.fetchone()
        if row and row[0]:
            cursor.execute("ALTER TABLE delivery_delivery ALTER COLUMN body SET COMPRESSION lz4")


def compress_bodies_with_the_default(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute("ALTER TABLE delivery_delivery ALTER COLUMN body SET COMPRESSION DEFAULT")


def keep_only_rows_of_existing_deliveries(apps, schema_editor):
    """Before the constraint comes back (reversing): delete the rows it would refuse.

    NOT EXISTS: an anti-join, where Django's `exclude(delivery__in=…)` would probe a list of every
    delivery once per row (as in migration 0009).
    """
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM delivery_deliverydevice AS t WHERE NOT EXISTS "
            "(SELECT 1 FROM delivery_delivery AS r WHERE r.id = t.delivery_id)"
        )


class Migration(migrations.Migration):

    dependencies = [
        ("delivery", "0006_membership_device_index"),
    ]

    operations = [
        migrations.AlterField(
            model_name="deliverydevice",
            name="delivery",
            field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE,
                                    related_name="devices", to="delivery.delivery"),
        ),
        migrations.RunPython(migrations.RunPython.noop, keep_only_rows_of_existing_deliveries),
        migrations.RunPython(compress_bodies_with_lz4, compress_bodies_with_the_default),
    ]
