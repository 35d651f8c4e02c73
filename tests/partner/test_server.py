"""The partner's server (`partner.server`): what it prints, how it misbehaves on demand, how it serves."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.core.management.base import CommandError

from tests.partner.receiving import BODY, DOCUMENT, JSON


def test_it_accepts_a_document_over_https_trusting_the_ca_it_generated(start_receiver):
    receiver = start_receiver()

    response = receiver.post(headers={**JSON, "X-AAMDest-Delivery-Id": "d-1"})

    assert response.status_code == 200
    [printed] = receiver.lines
    summary, document = printed.split("\n")
    assert summary == "accepted delivery d-1 AAM_Destination_Id 423 User_count 2"
    assert json.loads(document) == DOCUMENT  # CONTRACT §6: it prints each document it accepts


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


def test_it_listens_on_ipv6_loopback(start_receiver):
    receiver = start_receiver("--host", "::1")

    assert receiver.url.startswith("https://[::1]:")
    assert receiver.post().status_code == 200


def test_receivers_started_with_reuse_port_share_one_port_and_its_connections(start_receiver, tmp_path):
    first = start_receiver("--reuse-port", "--summary-only")
    port = first.server.socket.getsockname()[1]
    second = start_receiver("--reuse-port", "--summary-only", "--port", str(port),
                            "--cert-dir", str(tmp_path / "pki"))

    statuses = [first.post().status_code for _ in range(24)]  # a new connection each: the kernel picks one

    assert statuses == [200] * 24
    assert first.server.receiver.accepted + second.server.receiver.accepted == 24
    # Each connection goes to one of the two: both get some but in 2 runs of 2**24.
    assert first.server.receiver.accepted > 0 and second.server.receiver.accepted > 0


def test_without_reuse_port_a_second_receiver_cannot_take_the_port(start_receiver):
    first = start_receiver()
    port = str(first.server.socket.getsockname()[1])

    with pytest.raises(CommandError, match=f"cannot listen on 127.0.0.1 port {port}"):
        start_receiver("--port", port)
