"""Every auth mode against the reference partner (`manage.py receiver` in a subprocess, SPEC §3, §6).

Each destination is configured through the API and points at a receiver
started with `--cert-dir` in a temporary folder on an ephemeral port; aamdest
trusts its CA through AAMDEST_CA_BUNDLE. The receiver verifies what aamdest
really sends: documents, HMAC signatures (rotation included) and bearer tokens
it issued itself at `/oauth/token`.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from django.db import connections
from django.utils import timezone

from delivery.coordination import TOKEN_CACHE_PATTERN, token_cache_client
from delivery.models import Delivery
from delivery.realtime.claiming import claim_due_requests
from delivery.sending.rounds import send_deliveries, send_test_document
from destinations.models import Destination
from partner.certificates import CertificateFiles, certificate_files
from tests.delivery.pending_work import map_segments, pending_devices
from tests.local_partner import Partner, Received, Reply, StallingServer, start_partner

PROJECT = Path(__file__).resolve().parents[1]
URL = "/api/v1/destinations/"
START_TIMEOUT_S = 30
OLD_KEY = "old-partner-key"
NEW_KEY = "new-partner-key"
CLIENT_ID = "aam client"
CLIENT_SECRET = "s3cret:&/+ é"


@dataclass
class Receiver:
    """One `manage.py receiver` process and what it printed."""

    process: subprocess.Popen
    url: str
    lines: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1])

    @property
    def token_url(self) -> str:
        return f"{self.url}oauth/token"

    def wait_for_line(self, text: str, timeout_s: float = 5.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [line for line in list(self.lines) if text in line]
            if found:
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"the receiver did not print {text!r}; it printed {self.lines}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Receivers:
    """Starts receivers sharing one certificate folder; stops them all at the end."""

    def __init__(self, cert_dir: Path) -> None:
        self.cert_dir = cert_dir
        self.started: list[Receiver] = []

    @property
    def ca_file(self) -> Path:
        return self.cert_dir / "ca.pem"

    def start(self, *args: str, port: int = 0) -> Receiver:
        where = ["--port", str(port), "--cert-dir", str(self.cert_dir)]
        command = [sys.executable, "manage.py", "receiver", *where]
        env = {**os.environ, "DJANGO_DEBUG": "1", "PYTHONUNBUFFERED": "1"}
        output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
        process = subprocess.Popen([*command, *args], cwd=PROJECT, env=env, **output)
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
        receiver = Receiver(process=process, url="", lines=lines)
        self.started.append(receiver)
        banner = receiver.wait_for_line("listening on", timeout_s=START_TIMEOUT_S)
        receiver.url = banner.split(" on ", 1)[1].split()[0]
        return receiver

    def restart(self, receiver: Receiver, *args: str) -> Receiver:
        """Stop `receiver` and start a new one on the same port (it forgets the tokens it issued)."""
        receiver.stop()
        return self.start(*args, port=receiver.port)

    def certificates(self) -> CertificateFiles:
        return certificate_files(self.cert_dir)


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("receiver-pki")


@pytest.fixture
def receivers(cert_dir: Path, settings, db) -> Iterator[Receivers]:
    running = Receivers(cert_dir)
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = True  # the receiver is on this machine
    cache = token_cache_client()
    for key in cache.scan_iter(TOKEN_CACHE_PATTERN):
        cache.delete(key)  # tokens of an earlier run's destinations with the same ids
    yield running
    for receiver in running.started:
        receiver.stop()


@pytest.fixture(autouse=True)
def trust_the_receiver(receivers: Receivers, settings) -> None:
    # The first receiver writes the CA; later ones reuse it (--cert-dir).
    settings.AAMDEST_CA_BUNDLE = str(receivers.ca_file)


def configure(client, receiver: Receiver, **settings) -> Destination:
    """Create a destination pointing at `receiver` through the API."""
    body = {
        "name": f"partner-{receiver.port}-{time.monotonic_ns()}",
        "url": f"{receiver.url}aam",
        "client_id": "74323",
        "user_dpid": 20914,
        "aam_destination_id": 423,
        "retry_delay_ms": 50,
        **settings,
    }
    response = client.post(URL, body, format="json")
    assert response.status_code == 201, response.json()
    return Destination.objects.get(pk=response.json()["id"])


def send_test(client, destination: Destination) -> dict:
    response = client.post(f"{URL}{destination.pk}/test/", format="json")
    assert response.status_code == 200, response.content
    return response.json()


def last_test_delivery(destination: Destination) -> Delivery:
    return Delivery.objects.filter(destination=destination, kind="test").latest("id")


def attempts_of(delivery: Delivery) -> list[tuple[int | None, str | None]]:
    return list(delivery.attempts.order_by("number").values_list("status_code", "reason"))


# --- none and HMAC ------------------------------------------------------------------------


def test_without_auth_the_receiver_accepts_the_document_and_prints_its_delivery_id(
    operator_client, receivers
):
    receiver = receivers.start()
    destination = configure(operator_client, receiver, auth_mode="none")

    answer = send_test(operator_client, destination)

    assert answer["status_code"] == 200 and answer["error"] is None
    delivery = last_test_delivery(destination)
    assert delivery.status == "delivered"
    receiver.wait_for_line(f"accepted delivery {delivery.document_id} AAM_Destination_Id 423 User_count 1")


@pytest.mark.parametrize(
    ("algorithm", "header"), [("sha256", "X-Signature"), ("sha1", "X-Partner-Sig"), ("md5", "X-Signature")]
)
def test_the_receiver_verifies_the_hmac_signature_with_each_algorithm(
    operator_client, receivers, algorithm, header
):
    # Given a receiver that only accepts this algorithm, header and key
    receiver = receivers.start("--signing-key", OLD_KEY, "--algorithm", algorithm, "--header", header)
    destination = configure(
        operator_client, receiver, auth_mode="hmac", signing_key=OLD_KEY, signing_algorithm=algorithm,
        signing_header=header,
    )

    # When
    answer = send_test(operator_client, destination)

    # Then
    assert answer["status_code"] == 200, answer
    receiver.wait_for_line(f"accepted delivery {last_test_delivery(destination).document_id}")


def test_a_key_rotation_keeps_the_partner_accepting_with_the_new_key_alone(operator_client, receivers):
    # Given a partner that already switched to the new key, and a destination still on the old one
    receiver = receivers.start("--signing-key", NEW_KEY)
    destination = configure(operator_client, receiver, auth_mode="hmac", signing_key=OLD_KEY)
    before = send_test(operator_client, destination)

    # When the rotation starts, then finishes
    rotation = f"{URL}{destination.pk}/rotate-signing-key/"
    started = operator_client.post(rotation, {"key": NEW_KEY}, format="json")
    during = send_test(operator_client, destination)
    finished = operator_client.post(f"{URL}{destination.pk}/finish-key-rotation/", format="json")
    after = send_test(operator_client, destination)

    # Then only the old key's signature was refused
    assert before["status_code"] == 403
    assert started.status_code == 200 and during["status_code"] == 200  # thanks to X-Signature-New
    assert finished.status_code == 200 and after["status_code"] == 200

    # And a partner that kept only the old key now refuses, and the attempt fails
    old_only = receivers.restart(receiver, "--signing-key", OLD_KEY)
    refused = send_test(operator_client, destination)
    assert refused["status_code"] == 403 and "403" in refused["error"]
    delivery = last_test_delivery(destination)
    assert delivery.status == "failed" and attempts_of(delivery) == [(403, "status")]
    old_only.wait_for_line("refused  403")


# --- OAuth 2.0 ------------------------------------------------------------------------------


def oauth_receiver(receivers: Receivers, *extra: str) -> Receiver:
    return receivers.start("--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET, *extra)


def configure_oauth(client, receiver: Receiver, *, token_url: str | None = None, **settings) -> Destination:
    credentials = {
        "auth_mode": "oauth2",
        "oauth_token_url": token_url or receiver.token_url,
        "oauth_client_id": CLIENT_ID,
        "oauth_client_secret": CLIENT_SECRET,
        **settings,
    }
    return configure(client, receiver, **credentials)


@pytest.mark.parametrize("client_auth", ["basic", "body"])
def test_the_receiver_issues_a_token_for_basic_or_body_credentials_and_accepts_it(
    operator_client, receivers, client_auth
):
    receiver = oauth_receiver(receivers)
    destination = configure_oauth(operator_client, receiver, oauth_client_auth=client_auth)

    answers = [send_test(operator_client, destination) for _ in range(2)]

    assert [answer["status_code"] for answer in answers] == [200, 200]
    receiver.wait_for_line(f"accepted delivery {last_test_delivery(destination).document_id}")


class CountingTokenProxy:
    """A local token endpoint that counts requests and passes them on to the receiver's /oauth/token."""

    def __init__(self, *, receiver: Receiver, certificates: CertificateFiles, delay_s: float = 0.0) -> None:
        self.receiver = receiver
        self.ca_file = str(certificates.ca_file)
        self.delay_s = delay_s
        self.partner: Partner = start_partner(certificates)
        self.partner.responder = self.forward

    @property
    def url(self) -> str:
        return self.partner.url

    @property
    def count(self) -> int:
        return len(self.partner.requests)

    def forward(self, received: Received) -> Reply:
        passed = ("authorization", "content-type")
        headers = {k: v for k, v in received.headers.items() if k.lower() in passed}
        answer = requests.post(
            self.receiver.token_url, data=received.body, headers=headers, verify=self.ca_file, timeout=5
        )
        reply_headers = (("Content-Type", "application/json"),)
        status = answer.status_code
        return Reply(status=status, body=answer.content, headers=reply_headers, delay_s=self.delay_s)

    def stop(self) -> None:
        self.partner.stop()


@pytest.fixture
def token_proxy(receivers: Receivers) -> Iterator[Callable[..., CountingTokenProxy]]:
    proxies: list[CountingTokenProxy] = []

    def start(receiver: Receiver, *, delay_s: float = 0.0) -> CountingTokenProxy:
        proxy = CountingTokenProxy(receiver=receiver, certificates=receivers.certificates(), delay_s=delay_s)
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.stop()


def test_an_expired_token_is_renewed_before_the_receiver_would_refuse_it(
    operator_client, receivers, token_proxy
):
    # Given tokens that live 2 seconds
    receiver = oauth_receiver(receivers, "--token-ttl", "2")
    proxy = token_proxy(receiver)
    destination = configure_oauth(operator_client, receiver, token_url=proxy.url)

    # When sending now, within the token's life, and after it
    first = send_test(operator_client, destination)
    again = send_test(operator_client, destination)
    time.sleep(2.3)
    later = send_test(operator_client, destination)

    # Then one token served the first two, a new one the last, and none was refused
    assert [first["status_code"], again["status_code"], later["status_code"]] == [200, 200, 200]
    assert proxy.count == 2


def test_a_401_mid_stream_discards_the_token_and_the_retry_fetches_a_new_one(operator_client, receivers):
    # Given a token cached from an earlier send
    receiver = oauth_receiver(receivers)
    destination = configure_oauth(operator_client, receiver, max_retries=1, max_wait_ms=0)
    assert send_test(operator_client, destination)["status_code"] == 200

    # When the receiver restarts (forgetting the tokens it issued) and real-time traffic goes out
    restarted = receivers.restart(receiver, "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET)
    map_segments(destination, 14356)
    now = timezone.now()
    pending_devices(destination, 2, pending_since=now - dt.timedelta(seconds=1), segment_id=14356)
    [delivery] = claim_due_requests(destination=destination, now=now, max_requests=5)
    send_deliveries(destination=destination, deliveries=[delivery])

    # Then the first attempt got 401 and the retry, with a new token, got through
    delivery.refresh_from_db()
    assert attempts_of(delivery) == [(401, "status"), (200, None)]
    assert delivery.status == "delivered"
    restarted.wait_for_line(f"accepted delivery {delivery.document_id} AAM_Destination_Id 423 User_count 2")


def test_wrong_credentials_fail_the_attempt_with_reason_token_naming_the_endpoint(operator_client, receivers):
    receiver = oauth_receiver(receivers)
    destination = configure_oauth(operator_client, receiver, oauth_client_secret="not-the-secret")

    answer = send_test(operator_client, destination)

    assert answer["status_code"] is None
    assert answer["error"].startswith("token endpoint failed:") and "invalid_client" in answer["error"]
    assert "not-the-secret" not in answer["error"] and CLIENT_SECRET not in answer["error"]
    delivery = last_test_delivery(destination)
    assert delivery.status == "failed" and attempts_of(delivery) == [(None, "token")]


def test_a_stalled_token_endpoint_fails_with_reason_token_within_the_deadline(operator_client, receivers):
    # Given a token endpoint that accepts connections and never answers
    receiver = receivers.start()
    stalling = StallingServer()
    try:
        destination = configure_oauth(
            operator_client, receiver, token_url=f"https://127.0.0.1:{stalling.port}/token", timeout_ms=800
        )

        # When
        started = time.monotonic()
        answer = send_test(operator_client, destination)
        elapsed_s = time.monotonic() - started
    finally:
        stalling.stop()

    # Then
    assert answer["status_code"] is None and answer["error"].startswith("token endpoint failed:")
    assert "no complete answer within" in answer["error"]
    assert attempts_of(last_test_delivery(destination)) == [(None, "token")]
    assert last_test_delivery(destination).attempts.get().duration_ms <= 800 + 100
    assert elapsed_s < 0.8 + 1.0  # the deadline, plus the API call's own work


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_share_one_token_request(operator_client, receivers, token_proxy):
    # Given a token endpoint slow enough for every worker to need the token at once
    receiver = oauth_receiver(receivers)
    proxy = token_proxy(receiver, delay_s=0.3)
    destination = configure_oauth(operator_client, receiver, token_url=proxy.url)
    workers, barrier, outcomes = 6, threading.Barrier(6), []

    def worker() -> None:
        try:
            barrier.wait(timeout=10)
            outcomes.append(send_test_document(destination=Destination.objects.get(pk=destination.pk)).status)
        finally:
            connections.close_all()

    # When
    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    # Then every document went through, on one token
    assert outcomes == ["delivered"] * workers
    assert proxy.count == 1
    for delivery in Delivery.objects.filter(destination=destination):
        receiver.wait_for_line(f"accepted delivery {delivery.document_id}")


def test_the_admin_send_test_document_action_reaches_the_receiver_signed(
    operator_client, admin_client, receivers
):
    receiver = receivers.start("--signing-key", OLD_KEY)
    destination = configure(operator_client, receiver, auth_mode="hmac", signing_key=OLD_KEY)

    response = admin_client.post(
        "/admin/destinations/destination/",
        {"action": "send_test_document", "_selected_action": [destination.pk]},
        follow=True,
    )

    assert "200 OK" in response.content.decode()
    receiver.wait_for_line(f"accepted delivery {last_test_delivery(destination).document_id}")
