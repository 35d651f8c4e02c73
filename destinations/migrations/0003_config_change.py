"""The configuration change log (`destinations.audit`), readable by both roles.

`viewer` and `operator` get only its view permission: nobody edits the log.
"""

import django.core.serializers.json
import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

ROLES = ("viewer", "operator")


def let_roles_read_the_log(apps, schema_editor):
    using = schema_editor.connection.alias
    # Permissions are normally created after all migrations (post_migrate).
    config = apps.get_app_config("destinations")
    config.models_module = True
    create_permissions(config, verbosity=0, using=using, apps=apps)
    config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    view = Permission.objects.using(using).get(
        content_type__app_label="destinations", codename="view_configchange"
    )
    for group in Group.objects.using(using).filter(name__in=ROLES):
        group.permissions.add(view)


class Migration(migrations.Migration):
    dependencies = [
        ("destinations", "0002_roles"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ConfigChange",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("actor_name", models.CharField(max_length=150)),
                (
                    "source",
                    models.CharField(choices=[("api", "REST API"), ("admin", "Admin")], max_length=10),
                ),
                (
                    "action",
                    models.CharField(
                        choices=[
                            ("create", "Created"),
                            ("update", "Changed"),
                            ("delete", "Deleted"),
                            ("start_key_rotation", "Started a key rotation"),
                            ("finish_key_rotation", "Finished a key rotation"),
                        ],
                        max_length=30,
                    ),
                ),
                (
                    "object_type",
                    models.CharField(help_text="destination, mapping or segment.", max_length=30),
                ),
                ("object_id", models.CharField(max_length=64)),
                ("object_repr", models.CharField(max_length=300)),
                (
                    "changes",
                    models.JSONField(
                        blank=True, default=dict, encoder=django.core.serializers.json.DjangoJSONEncoder
                    ),
                ),
                (
                    "actor",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "destination",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="config_changes",
                        to="destinations.destination",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
                "indexes": [
                    models.Index(fields=["destination", "-created_at"], name="config_change_destination")
                ],
            },
        ),
        migrations.RunPython(let_roles_read_the_log, migrations.RunPython.noop),
    ]
