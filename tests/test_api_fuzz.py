"""Schemathesis over every operation of /api/schema/, as a superuser: no answer is a 5xx (issue 9).

Fixed seed (derandomized) and a small example budget, so that it is the same run every time and
costs about a minute. `-m "not fuzz"` skips it in a fast loop. With AAMDEST_FUZZ_LOG=path, each
request's operation, generation mode (positive: valid by the schema; negative: not), phase, status
and the start of the answer are appended to that file, tab-separated: that is how the share of
schema-valid requests the API accepts is measured.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core import signals
from django.db import close_old_connections, transaction
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from aamdest.wsgi import application
from destinations.models import Destination, Mapping, Segment
from tests.dns import use_resolver

MAX_EXAMPLES = 10
# Rows the operations on /{id}/ find: a generated ID would almost never name an existing row.
TARGET_ID = 990_000_001
SIGNED_ID = 990_000_002  # an hmac destination, for rotate-signing-key
ROTATING_ID = 990_000_003  # one whose key rotation is under way, for finish-key-rotation


def openapi_document() -> dict:
    """The document /api/schema/ serves (test_the_fuzzed_document_is_the_served_one checks it)."""
    document = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(json.dumps(document, default=str))


schema = schemathesis.openapi.from_dict(openapi_document())
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, database="none")
# The test send is synchronous: it connects to the destination's URL before answering. Generated
# URLs name hosts that do not resolve here (no DNS) or addresses aamdest refuses, so each example
# would only wait for a timeout, and fuzzing it would mean sending to whatever URL was generated.
schema = schema.exclude(method="POST", path_regex=r"/test/$")


PUBLIC_ADDRESS = "93.184.216.34"


@pytest.fixture
def public_dns() -> Iterator[None]:
    """Every generated host name resolves at once to a public address: this machine has no DNS, and a
    lookup of a generated name could wait for its resolver's timeout. Nothing connects to it (the
    one operation that would, the test send, is excluded)."""
    with use_resolver(lambda host, port: [PUBLIC_ADDRESS]):
        yield


@pytest.fixture
def token(db, public_dns) -> Iterator[str]:
    """A superuser's API token, with a destination, a segment and a mapping at TARGET_ID."""
    user = User.objects.create_superuser("fuzz", "fuzz@example.com", "pw")
    segment = Segment.objects.create(id=TARGET_ID, name="fuzz")
    destination = Destination.objects.create(
        id=TARGET_ID, name="fuzz", url="https://partner.example/aam", client_id="1",
        user_dpid=20914, aam_destination_id=1,
    )
    Mapping.objects.create(id=TARGET_ID, destination=destination, segment=segment, value="fuzz")
    for pk, new_key, started_at in ((SIGNED_ID, "", None), (ROTATING_ID, "n" * 32, timezone.now())):
        Destination.objects.create(
            id=pk, name=f"fuzz {pk}", url="https://partner.example/aam", client_id="1", user_dpid=20914,
            aam_destination_id=1, auth_mode="hmac", signing_key="k" * 32, new_signing_key=new_key,
            key_rotation_started_at=started_at,
        )
    # As Django's test client does: each request would otherwise close the test's connection.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield Token.objects.create(user=user).key
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


def _aim_at_targets(case) -> None:
    # An ID the database could not hold is kept, to check it is a 404 and not an overflow; any
    # other is pointed at an existing row, so that the operation's body is exercised. So is a
    # mapping's destination: the document cannot say which destinations exist.
    value = str((case.path_parameters or {}).get("id", ""))  # some phases give it as text
    if value.isascii() and value.isdigit() and int(value) < 2**63:
        path = case.operation.path
        target = ROTATING_ID if "finish" in path else SIGNED_ID if "rotate" in path else TARGET_ID
        case.path_parameters["id"] = target
    body = case.body if isinstance(case.body, dict) else {}
    if isinstance(body.get("destination"), int) and 0 <= body["destination"] < 2**63:
        body["destination"] = TARGET_ID


def _log(case, response) -> None:
    path = os.environ.get("AAMDEST_FUZZ_LOG")
    if path:
        with open(path, "a") as log:
            meta = case.meta
            excerpt = response.text[:200].replace("\t", " ").replace("\n", " ")
            fields = [case.operation.label, meta.generation.mode.value, meta.phase.name.value]
            log.write("\t".join([*fields, str(response.status_code), excerpt]) + "\n")


@pytest.mark.fuzz
@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_a_server_error(case, token) -> None:
    _aim_at_targets(case)
    headers = {"Authorization": f"Token {token}"}
    # Each example runs in a savepoint rolled back afterwards: every example starts from the
    # same rows, and one that broke the transaction cannot fail the next.
    with transaction.atomic():
        response = case.call(app=application, headers=headers)
        transaction.set_rollback(True)
    _log(case, response)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])


def test_the_fuzzed_document_is_the_served_one(admin_user_client) -> None:
    response = admin_user_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    assert json.loads(response.content) == openapi_document()
