from django.apps import AppConfig


class PartnerConfig(AppConfig):
    """The reference partner app: it adds the `receiver` management command and no models."""

    name = "partner"
    verbose_name = "Reference partner"
