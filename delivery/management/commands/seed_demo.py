"""`manage.py seed_demo`: the demo's admin, API token, partner and segments (what `make run` shows).

Idempotent: running it again updates the same rows instead of adding new ones.
The admin's password is set at every run, to AAMDEST_DEMO_PASSWORD or to a
fresh generated one, so that the password printed is always the one that works.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from rest_framework.authtoken.models import Token

from destinations.models import AuthMode, Destination, Mapping, Segment, SigningAlgorithm
from destinations.network import validate_url

DEMO_DESTINATION = "demo-partner"
DEMO_USERNAME = "admin"
# (segment ID, name, the mapping's value sent as Segment_ID): one mapping shows open text.
DEMO_SEGMENTS = (
    (14356, "Sports fans", "14356"),
    (12176, "Car intenders", "12176"),
    (10329, "Frequent travellers", "10329"),
    (10330, "Mobile gamers", "gamers-q3"),
)


@dataclass(frozen=True)
class DemoSeed:
    username: str
    password: str
    api_token: str
    destination_id: int
    destination_url: str
    segment_ids: list[int]


def seed_demo(*, receiver_url: str, signing_key: str, password: str) -> DemoSeed:
    """Create or update the demo rows; raise CommandError when `receiver_url` may not be sent to."""
    try:
        validate_url(receiver_url, field="--receiver-url")
    except ValidationError as exc:
        raise CommandError(exc.messages[0]) from None
    with transaction.atomic():
        admin = _admin(password=password)
        token, _ = Token.objects.get_or_create(user=admin)
        destination = _destination(url=receiver_url, signing_key=signing_key)
        for segment_id, name, value in DEMO_SEGMENTS:
            segment, _ = Segment.objects.update_or_create(id=segment_id, defaults={"name": name})
            # An existing mapping keeps its dates: the demo may have run on earlier days.
            Mapping.objects.update_or_create(
                destination=destination, segment=segment, defaults={"value": value}
            )
    return DemoSeed(
        username=admin.username, password=password, api_token=token.key, destination_id=destination.pk,
        destination_url=receiver_url, segment_ids=[segment_id for segment_id, _, _ in DEMO_SEGMENTS],
    )


def _admin(*, password: str) -> User:
    admin, _ = User.objects.get_or_create(username=DEMO_USERNAME, defaults={"email": "admin@example.com"})
    admin.is_staff = admin.is_superuser = admin.is_active = True
    admin.set_password(password)
    admin.save()
    return admin


def _destination(*, url: str, signing_key: str) -> Destination:
    destination, _ = Destination.objects.update_or_create(
        name=DEMO_DESTINATION,
        defaults={
            "url": url, "client_id": "74323", "user_dpid": 20914, "aam_destination_id": 423,
            "enabled": True, "realtime": True, "auth_mode": AuthMode.HMAC,
            "signing_algorithm": SigningAlgorithm.SHA256, "signing_header": "X-Signature",
            "signing_key": signing_key, "new_signing_key": "", "key_rotation_started_at": None,
        },
    )
    return destination


class Command(BaseCommand):
    help = "Create or update the demo's admin, API token, HMAC-signed partner and mapped segments."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--receiver-url", default="https://127.0.0.1:8443/aam",
                            help="Where the demo partner (manage.py receiver) listens.")
        parser.add_argument("--signing-key", default="demo-signing-key",
                            help="The HMAC key the receiver verifies (its --signing-key).")
        parser.add_argument("--json", action="store_true", help="Print the result as one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        password = os.environ.get("AAMDEST_DEMO_PASSWORD") or secrets.token_urlsafe(12)
        seed = seed_demo(receiver_url=options["receiver_url"], signing_key=options["signing_key"],
                         password=password)
        if options["json"]:
            self.stdout.write(json.dumps(asdict(seed)))
            return
        self.stdout.write(f"admin login: {seed.username} / {seed.password}")
        self.stdout.write(f"API token:   {seed.api_token}  (Authorization: Token <key>)")
        self.stdout.write(f"destination: {DEMO_DESTINATION} (id {seed.destination_id})"
                          f" -> {seed.destination_url}, HMAC-SHA256 in X-Signature")
        self.stdout.write(f"segments:    {', '.join(map(str, seed.segment_ids))}")
