"""Create the `viewer` and `operator` groups (CONTRACT §5).

`viewer` gets the view permissions of the destinations and delivery models;
`operator` gets add/change/delete/view on them. The API checks the group
names; the permissions make the same roles work in the admin for staff users.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

APPS = ("destinations", "delivery")
ROLES = {"viewer": ("view",), "operator": ("add", "change", "delete", "view")}


def _ensure_permissions(apps, using):
    # Permissions are normally created after all migrations (post_migrate); on a
    # fresh database they do not exist yet when this runs, so create them now.
    for label in APPS:
        config = apps.get_app_config(label)
        config.models_module = True
        create_permissions(config, verbosity=0, using=using, apps=apps)
        config.models_module = None


def create_roles(apps, schema_editor):
    using = schema_editor.connection.alias
    _ensure_permissions(apps, using)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    models = [model for label in APPS for model in apps.get_app_config(label).get_models()]
    for name, actions in ROLES.items():
        group, _ = Group.objects.using(using).get_or_create(name=name)
        codenames = [f"{action}_{model._meta.model_name}" for model in models for action in actions]
        permissions = Permission.objects.using(using).filter(
            content_type__app_label__in=APPS, codename__in=codenames
        )
        group.permissions.add(*permissions)


def remove_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.using(schema_editor.connection.alias).filter(name__in=ROLES).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("destinations", "0001_initial"),
        ("delivery", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
