from django.apps import AppConfig


class DeliveryConfig(AppConfig):
    name = "delivery"
    verbose_name = "Delivery"

    def ready(self) -> None:
        from django.db.models import Field, ForeignObject

        from delivery.dialect import AnyOf

        # Relations keep lookups of their own (Field's are not inherited): both get `__any`.
        Field.register_lookup(AnyOf)
        ForeignObject.register_lookup(AnyOf)
