"""The reference partner (`manage.py receiver`), exercised with real HTTPS requests.

Most tests run the server in a thread from the command's own argument parser,
so every option goes through the same parsing as on the command line; one test
runs the real command in a subprocess.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.management.base import CommandError

from partner.management.commands.receiver import (
    Command,
    ReceiverServer,
    build_server,
    ensure_certificates,
)

PROJECT = Path(__file__).resolve().parents[2]

DOCUMENT: dict[str, Any] = {
    "ProcessTime": "Wed Jul 27 16:17:42 UTC 2016",
    "User_DPID": "20914",
    "Client_ID": "74323",
    "AAM_Destination_Id": "423",
    "User_count": "2",
    "Users": [
        {
            "AAM_UUID": "19393572368547369350319949416899715727",
            "DataPartner_UUID": "4250948725049857",
            "AAM_Regions": ["9"],
            "Segments": [
                {"Segment_ID": "14356", "Status": "1", "DateTime": "Wed Jul 27 16:17:22 UTC 2016"},
                {"Segment_ID": "12176", "Status": "0", "DateTime": "Wed Jul 27 16:17:22 UTC 2016"},
            ],
        },
        {
            "AAM_UUID": "0578240750487542456854736923319946899715232",
            "DataPartner_UUID": "",
            "AAM_Regions": ["6", "9"],
            "Segments": [{"Segment_ID": "10329", "Status": "1", "DateTime": "Wed Jul 27 16:17:21 UTC 2016"}],
        },
    ],
}
BODY = json.dumps(DOCUMENT).encode()
JSON = {"Content-Type": "application/json"}


def hmac_base64(*, body: bytes, key: str, digest: str = "sha256") -> str:
    return base64.b64encode(hmac.new(key.encode(), body, getattr(hashlib, digest)).digest()).decode()


@dataclass
class Running:
    server: ReceiverServer
    ca_file: Path | None
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def post(self, body: bytes = BODY, *, path: str = "aam", **kwargs: Any) -> requests.Response:
        kwargs.setdefault("headers", JSON)
        return requests.post(f"{self.url}{path}", data=body, verify=str(self.ca_file), timeout=5, **kwargs)


@pytest.fixture
def start_receiver(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Start a receiver in a thread with command-line arguments; stopped after the test."""
    started: list[Running] = []

    def start(*args: str) -> Running:
        parser = Command().create_parser("manage.py", "receiver")
        options = vars(parser.parse_args(["--port", "0", *args]))
        if "--cert" not in args and "--http" not in args and "--cert-dir" not in args:
            options["cert_dir"] = tmp_path / "pki"
        lines: list[str] = []
        server = build_server(options, emit=lines.append)
        ca_file = options["cert_dir"] / "ca.pem" if options["cert_dir"] else None
        running = Running(server=server, ca_file=ca_file, lines=lines)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.server.shutdown()
        running.server.server_close()


def test_it_accepts_a_document_over_https_trusting_the_ca_it_generated(start_receiver):
    receiver = start_receiver()

    response = receiver.post(headers={**JSON, "X-AAMDest-Delivery-Id": "d-1"})

    assert response.status_code == 200
    [printed] = receiver.lines
    summary, document = printed.split("\n")
    assert summary == "accepted delivery d-1 AAM_Destination_Id 423 User_count 2"
    assert json.loads(document) == DOCUMENT  # SPEC §6: it prints each document it accepts


def test_with_summary_only_it_prints_one_line_per_document(start_receiver):
    receiver = start_receiver("--summary-only")

    receiver.post(headers={**JSON, "X-AAMDest-Delivery-Id": "d-2"})

    assert receiver.lines == ["accepted delivery d-2 AAM_Destination_Id 423 User_count 2"]


def test_it_prints_the_whole_document_when_verbose(start_receiver):
    receiver = start_receiver("--verbose")

    receiver.post()

    summary, document = receiver.lines[0].split("\n", 1)
    assert summary.startswith("accepted delivery")
    assert document.startswith("{\n  ") and json.loads(document) == DOCUMENT


def test_it_accepts_a_signature_made_with_any_of_its_keys(start_receiver):
    receiver = start_receiver("--signing-key", "old", "--signing-key", "new")

    response = receiver.post(headers={**JSON, "X-Signature": hmac_base64(body=BODY, key="new")})

    assert response.status_code == 200


def test_it_refuses_a_signature_made_with_another_key_with_403(start_receiver):
    receiver = start_receiver("--signing-key", "partner-key")

    wrong = receiver.post(headers={**JSON, "X-Signature": hmac_base64(body=BODY, key="other-key")})
    missing = receiver.post()

    assert (wrong.status_code, missing.status_code) == (403, 403)
    assert receiver.lines[0].startswith("refused  403")


def test_it_refuses_a_signature_of_other_bytes_than_the_body(start_receiver):
    receiver = start_receiver("--signing-key", "k")
    reformatted = json.dumps(DOCUMENT, indent=1).encode()

    response = receiver.post(reformatted, headers={**JSON, "X-Signature": hmac_base64(body=BODY, key="k")})

    assert response.status_code == 403


def test_during_a_key_rotation_it_accepts_the_new_keys_signature_in_the_new_header(start_receiver):
    receiver = start_receiver("--signing-key", "new")
    headers = {**JSON, "X-Signature": hmac_base64(body=BODY, key="old"),
               "X-Signature-New": hmac_base64(body=BODY, key="new")}

    assert receiver.post(headers=headers).status_code == 200


def test_it_reads_the_signature_from_the_header_and_algorithm_it_was_given(start_receiver):
    receiver = start_receiver("--signing-key", "k", "--algorithm", "md5", "--header", "X-Partner-Sig")

    md5, sha256 = hmac_base64(body=BODY, key="k", digest="md5"), hmac_base64(body=BODY, key="k")
    in_default_header = receiver.post(headers={**JSON, "X-Signature": md5})
    with_sha256 = receiver.post(headers={**JSON, "X-Partner-Sig": sha256})
    right = receiver.post(headers={**JSON, "X-Partner-Sig": md5})

    assert (in_default_header.status_code, with_sha256.status_code, right.status_code) == (403, 403, 200)


def test_a_body_signed_right_but_not_a_document_is_refused_with_400_not_403(start_receiver):
    # The SPEC §3 test vector: HMAC-SHA1 of "POST message content".
    receiver = start_receiver("--signing-key", "sample_partner_private_key", "--algorithm", "sha1")

    signed = {**JSON, "X-Signature": "+wFdR/afZNoVqtGl8/e1KJ4ykPU="}

    response = receiver.post(b"POST message content", headers=signed)

    assert response.status_code == 400
    assert "not UTF-8 JSON" in response.json()["error"]


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict], None]:
    def mutate(document: dict) -> None:
        target = document
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


def _reorder(document: dict) -> None:
    users = document.pop("Users")
    document["Users"] = users
    document["User_count"] = document.pop("User_count")


def _drop_destination_id(document: dict) -> None:
    document["AAM_Destination_Id_"] = document.pop("AAM_Destination_Id")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_drop_destination_id, "expected"),
        (_reorder, "in that order"),
        (_set(("User_DPID",), 20914), "not a JSON string"),
        (_set(("User_count",), "3"), "User_count"),
        (_set(("Users", 0, "Segments", 0, "Status"), 1), "Status"),
        (_set(("Users", 0, "Segments", 0, "Status"), "2"), "Status"),
        (_set(("Users", 1, "AAM_Regions"), ["9", "6"]), "ascending"),
        (_set(("Users", 1, "AAM_Regions"), [6]), "not a JSON string"),
        (_set(("ProcessTime",), "2016-07-27T16:17:42Z"), "EEE MMM dd"),
        (_set(("ProcessTime",), "Thu Jul 27 16:17:42 UTC 2016"), "Wed"),
        (_set(("Users", 0, "Segments", 1, "DateTime"), "Wed Jul 27 16:17:22 GMT 2016"), "DateTime"),
        (_set(("Users", 0, "AAM_UUID"), ""), "empty"),
    ],
)
def test_it_refuses_a_document_that_strays_from_spec_section_1_with_400(start_receiver, mutate, message):
    receiver = start_receiver()
    document = copy.deepcopy(DOCUMENT)
    mutate(document)

    response = receiver.post(json.dumps(document).encode())

    assert response.status_code == 400
    assert message in response.json()["error"]


def test_it_refuses_a_body_that_is_not_labelled_json_with_400(start_receiver):
    receiver = start_receiver()

    response = receiver.post(headers={"Content-Type": "text/plain"})

    assert response.status_code == 400


def test_it_refuses_an_object_with_a_repeated_key_with_400(start_receiver):
    receiver = start_receiver()
    body = BODY.replace(b'"Client_ID": "74323"', b'"Client_ID": "74323", "Client_ID": "1"')

    assert receiver.post(body).status_code == 400


def _token(receiver: Running, **kwargs: Any) -> requests.Response:
    return requests.post(f"{receiver.url}oauth/token", verify=str(receiver.ca_file), timeout=5, **kwargs)


OAUTH = ("--client-id", "partner id", "--client-secret", "s3cr:t%+")
FORM_CREDENTIALS = {"grant_type": "client_credentials", "client_id": "partner id",
                    "client_secret": "s3cr:t%+"}


def test_it_issues_a_bearer_token_for_credentials_in_http_basic_urlencoded(start_receiver):
    receiver = start_receiver(*OAUTH, "--token-ttl", "120")
    basic = {"Authorization": "Basic " + base64.b64encode(b"partner+id:s3cr%3At%25%2B").decode()}

    response = _token(receiver, data={"grant_type": "client_credentials"}, headers=basic)

    assert response.status_code == 200
    assert response.json()["token_type"] == "Bearer"
    assert response.json()["expires_in"] == 120
    assert len(response.json()["access_token"]) >= 32


def test_it_issues_a_bearer_token_for_credentials_in_form_fields(start_receiver):
    receiver = start_receiver(*OAUTH)

    response = _token(receiver, data=FORM_CREDENTIALS)

    assert response.status_code == 200
    assert response.json()["expires_in"] == 3600


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"auth": ("partner id", "wrong")},
        {"data": FORM_CREDENTIALS, "auth": ("partner id", "s3cr:t%+")},
        {"data": {"client_id": "partner id"}},
        {},
    ],
    ids=["wrong secret", "both methods at once", "no secret", "no credentials"],
)
def test_it_answers_invalid_client_with_401(start_receiver, request_kwargs):
    receiver = start_receiver(*OAUTH)
    data = {"grant_type": "client_credentials", **request_kwargs.pop("data", {})}
    if "auth" in request_kwargs:
        # requests would send the raw pair; the grant wants it urlencoded.
        user, password = (requests.utils.quote(part, safe="") for part in request_kwargs.pop("auth"))
        encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
        request_kwargs["headers"] = {"Authorization": f"Basic {encoded}"}

    response = _token(receiver, data=data, **request_kwargs)

    assert response.status_code == 401
    assert response.json() == {"error": "invalid_client"}


def _issued_token(receiver: Running) -> str:
    return _token(receiver, data=FORM_CREDENTIALS).json()["access_token"]


def test_it_accepts_data_only_with_a_bearer_token_it_issued(start_receiver):
    receiver = start_receiver(*OAUTH)
    token = _issued_token(receiver)

    without = receiver.post()
    made_up = receiver.post(headers={**JSON, "Authorization": "Bearer not-a-token-it-issued"})
    issued = receiver.post(headers={**JSON, "Authorization": f"Bearer {token}"})

    assert (without.status_code, made_up.status_code, issued.status_code) == (401, 401, 200)


def test_it_refuses_a_token_once_it_expired(start_receiver):
    receiver = start_receiver(*OAUTH, "--token-ttl", "1")
    token = _issued_token(receiver)

    time.sleep(1.1)

    assert receiver.post(headers={**JSON, "Authorization": f"Bearer {token}"}).status_code == 401


def test_with_a_token_ttl_of_zero_tokens_have_no_expires_in(start_receiver):
    receiver = start_receiver(*OAUTH, "--token-ttl", "0")

    answer = _token(receiver, data=FORM_CREDENTIALS).json()

    assert "expires_in" not in answer
    bearer = {"Authorization": f"Bearer {answer['access_token']}"}
    assert receiver.post(headers={**JSON, **bearer}).status_code == 200


def test_it_checks_both_the_token_and_the_signature_when_given_both(start_receiver):
    receiver = start_receiver(*OAUTH, "--signing-key", "k")
    bearer = {"Authorization": f"Bearer {_issued_token(receiver)}"}

    unsigned = receiver.post(headers={**JSON, **bearer})
    signed = receiver.post(headers={**JSON, **bearer, "X-Signature": hmac_base64(body=BODY, key="k")})

    assert (unsigned.status_code, signed.status_code) == (403, 200)


def test_it_fails_every_request_with_a_fail_rate_of_one(start_receiver):
    receiver = start_receiver("--fail-rate", "1")

    response = receiver.post()

    assert response.status_code == 503
    assert not [line for line in receiver.lines if line.startswith("accepted")]


def test_it_waits_the_given_delay_before_answering(start_receiver):
    receiver = start_receiver("--delay-ms", "300")

    started = time.monotonic()
    response = receiver.post()

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_it_keeps_a_connection_alive_across_requests(start_receiver):
    receiver = start_receiver()
    context = ssl.create_default_context(cafile=str(receiver.ca_file))
    connection = http.client.HTTPSConnection("localhost", receiver.server.server_address[1], context=context)
    answers = []

    for _ in range(3):
        connection.request("POST", "/aam", body=BODY, headers=JSON)
        response = connection.getresponse()
        response.read()
        answers.append((response.status, response.version, response.will_close))
    connection.close()

    assert answers == [(200, 11, False)] * 3


def test_it_answers_many_concurrent_requests(start_receiver):
    receiver = start_receiver()

    with requests.Session() as session, ThreadPoolExecutor(max_workers=8) as pool:
        trusted = str(receiver.ca_file)  # per request: REQUESTS_CA_BUNDLE would override session.verify
        send = lambda _: session.post(f"{receiver.url}aam", data=BODY, headers=JSON, verify=trusted)  # noqa: E731
        statuses = [response.status_code for response in pool.map(send, range(80))]

    assert statuses == [200] * 80
    assert receiver.server.receiver.accepted == 80


def test_it_logs_each_acknowledged_user_with_a_timestamp_when_asked(start_receiver, tmp_path):
    receiver = start_receiver("--ack-log", str(tmp_path / "acks.log"))
    before = time.time()

    receiver.post()

    rows = [line.split() for line in (tmp_path / "acks.log").read_text().splitlines()]
    assert [uuid for _, uuid in rows] == [user["AAM_UUID"] for user in DOCUMENT["Users"]]
    assert all(before <= float(at) <= time.time() for at, _ in rows)


def test_it_serves_plain_http_on_loopback_when_asked(start_receiver):
    receiver = start_receiver("--http")

    response = requests.post(f"{receiver.url}aam", data=BODY, headers=JSON, timeout=5)

    assert receiver.url.startswith("http://127.0.0.1:")
    assert response.status_code == 200


def test_it_refuses_plain_http_on_a_host_that_is_not_loopback(start_receiver):
    with pytest.raises(CommandError, match="loopback"):
        start_receiver("--http", "--host", "0.0.0.0")


def test_it_serves_a_certificate_it_is_given(start_receiver, tmp_path):
    given = ensure_certificates(tmp_path / "given")
    receiver = start_receiver("--cert", str(given.cert_file), "--cert-key", str(given.key_file))
    receiver.ca_file = given.ca_file

    assert receiver.post().status_code == 200


def test_it_listens_on_ipv6_loopback(start_receiver):
    receiver = start_receiver("--host", "::1")

    assert receiver.url.startswith("https://[::1]:")
    assert receiver.post().status_code == 200


def test_it_reuses_certificates_still_valid_so_a_trusting_sender_keeps_working(tmp_path):
    first = ensure_certificates(tmp_path)
    ca = first.ca_file.read_bytes()

    second = ensure_certificates(tmp_path)

    assert second.ca_file.read_bytes() == ca
    assert oct(second.key_file.stat().st_mode & 0o777) == "0o600"


def test_the_command_prints_where_it_listens_and_stops_cleanly_on_sigterm(tmp_path):
    environment = {**os.environ, "DJANGO_DEBUG": "1"}
    command = [sys.executable, "manage.py", "receiver", "--port", "0", "--cert-dir", str(tmp_path)]
    process = subprocess.Popen(command, cwd=PROJECT, env=environment, stdout=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        url = banner.split(" on ")[1].split()[0]
        trusted = str(tmp_path / "ca.pem")
        response = requests.post(f"{url}aam", data=BODY, headers=JSON, verify=trusted, timeout=5)
        assert process.stdout.readline().startswith(f"certificates in {tmp_path}")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        rest = process.stdout.read()
    finally:
        process.kill()
        process.wait()

    assert banner.startswith("aamdest receiver listening on https://127.0.0.1:")
    assert response.status_code == 200
    assert "accepted delivery - AAM_Destination_Id 423 User_count 2" in rest
    assert "stopped after accepting 1 document(s)" in rest
    assert process.returncode == 0
