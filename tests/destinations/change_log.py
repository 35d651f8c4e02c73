"""Reading the configuration change log in the audit tests: the secrets it must never hold."""

from __future__ import annotations

import json

from django.core.serializers.json import DjangoJSONEncoder

from destinations.models import ConfigChange

API = "/api/v1/"
OLD_KEY = "old-signing-key-never-recorded"
NEW_KEY = "new-signing-key-never-recorded"
CLIENT_SECRET = "client-secret-never-recorded"
SECRETS = (OLD_KEY, NEW_KEY, CLIENT_SECRET)


def dumped(change: ConfigChange) -> str:
    """Everything the row holds, as a database dump would show it."""
    values = {field.attname: getattr(change, field.attname) for field in ConfigChange._meta.concrete_fields}
    return json.dumps(values, cls=DjangoJSONEncoder)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
