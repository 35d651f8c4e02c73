"""Secrets never leave (CONTRACT §3), end to end.

An HMAC destination (mid key rotation, so two keys are stored) and an OAuth 2.0
destination are configured through the API; real-time traffic (events through
the API, then the flush task in-process) and test documents go to two local
reference receivers, one verifying signatures, one issuing and checking bearer
tokens. Then the signing keys, the client secret (plain and in its encoded
forms) and every access token issued are looked for in: a `pg_dump` of the
test database, every key and value of the Redis database (the broker and the
token cache, Celery message bodies decoded), the captured logs at DEBUG (as
records and as JSON lines), every API response, the admin's list, change and
history pages, and the delivery log's rows. None may appear.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import logging
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote_plus

import pytest
import redis
from django.contrib.admin.models import LogEntry
from django.db import connection

from aamdest.logging import JsonFormatter
from delivery import tasks
from delivery.coordination import TOKEN_CACHE_PATTERN
from delivery.models import Attempt, Delivery
from destinations.models import ConfigChange, Destination
from partner.management.commands.receiver import Command as ReceiverCommand
from partner.management.commands.receiver import build_server
from partner.server import ReceiverServer
from tests.destinations.admin_forms import form_data

SIGNING_KEY = "plain-signing-key-4e1f"
NEW_SIGNING_KEY = "plain-new-signing-key-9a7c"
CLIENT_ID = "aam-client"
CLIENT_SECRET = "plain-client-secret-77b2"
SEGMENT = 14356
API = "/api/v1/"

pytestmark = pytest.mark.django_db(transaction=True)


# --- Two local partners --------------------------------------------------------------


def start_receiver(cert_dir: Path, *args: str) -> tuple[ReceiverServer, list[str]]:
    parser = ReceiverCommand().create_parser("manage.py", "receiver")
    options = vars(parser.parse_args(["--port", "0", "--cert-dir", str(cert_dir), *args]))
    printed: list[str] = []
    server = build_server(options, emit=printed.append)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, printed


@pytest.fixture
def receivers(tmp_path: Path, settings) -> Iterator[tuple[ReceiverServer, ReceiverServer]]:
    signed, _ = start_receiver(tmp_path, "--signing-key", SIGNING_KEY, "--signing-key", NEW_SIGNING_KEY)
    oauth, _ = start_receiver(tmp_path, "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET)
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = True
    settings.AAMDEST_CA_BUNDLE = str(tmp_path / "ca.pem")
    yield signed, oauth
    for server in (signed, oauth):
        server.shutdown()
        server.server_close()


@pytest.fixture
def redis_db(settings) -> Iterator[redis.Redis]:
    """The test's Redis database (broker and token cache); keys it adds are removed afterwards."""
    client = redis.Redis.from_url(settings.AAMDEST_REDIS_URL)
    before = set(client.keys("*"))
    yield client
    added = set(client.keys("*")) - before
    if added:
        client.delete(*added)


# --- Generating traffic through the public surfaces -----------------------------------------


def configure(client, responses: list, **body) -> Destination:
    common = {"client_id": "74323", "user_dpid": 20914, "aam_destination_id": 423, "max_wait_ms": 0}
    response = client.post(f"{API}destinations/", {**common, **body}, format="json")
    responses.append(response)
    assert response.status_code == 201, response.json()
    mapping = {"destination": response.json()["id"], "segment_id": SEGMENT}
    mapped = client.post(f"{API}mappings/", mapping, format="json")
    responses.append(mapped)
    return Destination.objects.get(pk=response.json()["id"])


def send_traffic(client, destinations: list[Destination], responses: list) -> None:
    events = [
        {"type": "qualification", "aam_uuid": f"{index:038d}", "segment_id": SEGMENT, "regions": [7]}
        for index in range(3)
    ]
    ingested = client.post(f"{API}events/", events, format="json")
    responses.append(ingested)
    assert ingested.status_code == 202, ingested.json()
    for destination in destinations:
        tasks.flush_destination(destination.pk)  # what a worker runs, in-process
        tested = client.post(f"{API}destinations/{destination.pk}/test/", format="json")
        responses.append(tested)
        assert tested.json()["status_code"] == 200, tested.json()


def read_api(client, destinations: list[Destination], responses: list) -> None:
    paths = ["destinations/", "mappings/", "segments/", "deliveries/"]
    paths += [f"destinations/{d.pk}/" for d in destinations]
    paths += [f"deliveries/{pk}/" for pk in Delivery.objects.values_list("pk", flat=True)]
    for path in paths:
        response = client.get(f"{API}{path}")
        assert response.status_code == 200, path
        responses.append(response)


def edit_in_the_admin(admin_client, destination: Destination) -> None:
    """Save the destination's change form with its secret typed again: the admin history gets an entry."""
    data = form_data(destination, timeout_ms=2500, oauth_client_secret=CLIENT_SECRET)
    response = admin_client.post(f"/admin/destinations/destination/{destination.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:3000]


def admin_pages(admin_client, destinations: list[Destination]) -> list[str]:
    paths = [
        "/admin/destinations/destination/",
        "/admin/destinations/configchange/",
        "/admin/destinations/mapping/",
        "/admin/delivery/delivery/",
        "/admin/delivery/attempt/",
    ]
    for destination in destinations:
        paths += [
            f"/admin/destinations/destination/{destination.pk}/change/",
            f"/admin/destinations/destination/{destination.pk}/history/",
        ]
    logged = (("destinations/configchange", ConfigChange.objects), ("delivery/delivery", Delivery.objects))
    for model, rows in logged:
        paths += [f"/admin/{model}/{pk}/change/" for pk in rows.values_list("pk", flat=True)]
    pages = []
    for path in paths:
        response = admin_client.get(path)
        assert response.status_code == 200, path
        pages.append(response.content.decode())
    return pages


# --- Where secrets could end up -----------------------------------------------------------------


def database_dump() -> str:
    name = connection.settings_dict["NAME"]
    dump = subprocess.run(
        ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "--no-owner", name],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return dump.stdout


def redis_contents(client: redis.Redis) -> list[bytes]:
    """Every key and value, with Celery message bodies (base64 JSON) decoded as well."""
    contents: list[bytes] = []
    for key in client.scan_iter("*"):
        kind = client.type(key).decode()
        values: list[bytes] = {
            "string": lambda: [client.get(key) or b""],
            "hash": lambda: [part for pair in client.hgetall(key).items() for part in pair],
            "list": lambda: client.lrange(key, 0, -1),
            "set": lambda: list(client.smembers(key)),
            "zset": lambda: [member for member, _ in client.zrange(key, 0, -1, withscores=True)],
        }.get(kind, lambda: [])()
        contents.append(key)
        for value in values:
            contents += [value, *decoded_message_body(value)]
    return contents


def decoded_message_body(value: bytes) -> list[bytes]:
    try:
        message = json.loads(value)
        return [base64.b64decode(message["body"])] if isinstance(message, dict) and "body" in message else []
    except (ValueError, KeyError, TypeError):
        return []


def log_lines(records: list[logging.LogRecord]) -> str:
    formatter = JsonFormatter()
    return "\n".join(formatter.format(record) for record in records)


def delivery_log_rows() -> str:
    deliveries = [{**row, "body": bytes(row["body"]).decode()} for row in Delivery.objects.values()]
    attempts = list(Attempt.objects.values())
    return json.dumps([deliveries, attempts], default=str)


def secret_forms(tokens: list[str]) -> list[str]:
    basic_pair = f"{quote_plus(CLIENT_ID)}:{quote_plus(CLIENT_SECRET)}"
    return [
        SIGNING_KEY,
        NEW_SIGNING_KEY,
        CLIENT_SECRET,
        quote_plus(CLIENT_SECRET),
        base64.b64encode(basic_pair.encode()).decode(),
        *tokens,
    ]


def assert_clean(where: str, text: str | bytes, secrets: list[str]) -> None:
    haystack = text if isinstance(text, str) else text.decode("utf-8", "replace")
    for secret in secrets:
        assert secret not in haystack, f"a secret appears in {where}"


def configure_both(operator_client, responses: list, *, signed, oauth) -> list[Destination]:
    """An HMAC destination at `signed` in the middle of a key rotation, and an OAuth one at `oauth`."""
    hmac_destination = configure(
        operator_client, responses, name="hmac-partner", url=f"{signed.url}aam", auth_mode="hmac",
        signing_key=SIGNING_KEY,
    )
    rotation = f"{API}destinations/{hmac_destination.pk}/rotate-signing-key/"
    responses.append(operator_client.post(rotation, {"key": NEW_SIGNING_KEY}, format="json"))
    oauth_destination = configure(
        operator_client, responses, name="oauth-partner", url=f"{oauth.url}aam", auth_mode="oauth2",
        oauth_token_url=f"{oauth.url}oauth/token", oauth_client_id=CLIENT_ID,
        oauth_client_secret=CLIENT_SECRET,
    )
    return [hmac_destination, oauth_destination]


def assert_redis_clean(redis_db, secrets: list[str]) -> None:
    """The token cache is in Redis, and no key or value there holds a secret."""
    contents = redis_contents(redis_db)
    assert any(fnmatch.fnmatch(key.decode(), TOKEN_CACHE_PATTERN) for key in contents)
    for value in contents:
        assert_clean("Redis", value, secrets)


# --- The test -------------------------------------------------------------------------------


def test_no_secret_appears_in_the_database_broker_logs_api_admin_or_delivery_log(
    operator_client, admin_client, receivers, redis_db, caplog
):
    caplog.set_level(logging.DEBUG)
    signed, oauth = receivers
    responses: list = []

    # Given an HMAC destination in the middle of a key rotation, and an OAuth one
    destinations = configure_both(operator_client, responses, signed=signed, oauth=oauth)
    oauth_destination = destinations[1]

    # When traffic flows and everything is read back
    send_traffic(operator_client, destinations, responses)
    edit_in_the_admin(admin_client, oauth_destination)
    read_api(operator_client, destinations, responses)
    pages = admin_pages(admin_client, destinations)

    # Then the traffic was real: delivered, signed and authenticated
    assert set(Delivery.objects.values_list("status", flat=True)) == {"delivered"}
    assert Delivery.objects.filter(kind="realtime").count() == 2
    tokens = list(oauth.receiver.tokens.issued)
    assert tokens, "the OAuth receiver issued a token"
    secrets = secret_forms(tokens)

    # And no secret is anywhere
    dump = database_dump()
    assert "hmac-partner" in dump and "oauth-partner" in dump
    assert_clean("the database dump", dump, secrets)
    assert_redis_clean(redis_db, secrets)
    assert any("attempt 1" in record.getMessage() for record in caplog.records)
    assert_clean("the logs", caplog.text + log_lines(caplog.records), secrets)
    for response in responses:
        assert_clean(f"the API answer {response.request['PATH_INFO']}", response.content, secrets)
    assert any("hmac-partner" in page for page in pages)
    for page in pages:
        assert_clean("an admin page", page, secrets)
    assert LogEntry.objects.exists()
    assert_clean("the admin history", json.dumps(list(LogEntry.objects.values()), default=str), secrets)
    assert_clean("the delivery log", delivery_log_rows(), secrets)
