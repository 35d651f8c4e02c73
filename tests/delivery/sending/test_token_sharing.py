"""OAuth 2.0 tokens shared: threads and processes waiting on one fetch make one request, share its error."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from django.conf import settings as django_settings

from delivery.sending.token_endpoint import TokenError
from delivery.sending.tokens import get_access_token
from tests.delivery.sending.token_calls import CLIENT_ID, SECRET
from tests.local_partner import Reply
from tests.token_endpoint import token_reply


def _need_token_in_threads(destination, count: int, barrier: threading.Barrier) -> tuple[list, list]:
    tokens: list[str] = []
    errors: list[str] = []

    def need() -> None:
        barrier.wait()
        try:
            tokens.append(get_access_token(destination=destination, deadline_ms=5000))
        except TokenError as error:
            errors.append(str(error))

    threads = [threading.Thread(target=need) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, [tokens, errors]


SUBPROCESS = """
import django, sys
django.setup()
from destinations.models import Destination
from delivery.sending.tokens import get_access_token
destination = Destination(
    pk=int(sys.argv[1]), auth_mode="oauth2", oauth_token_url=sys.argv[2],
    oauth_client_id=sys.argv[3], oauth_client_secret=sys.argv[4], oauth_scope=sys.argv[5],
)
print("ready", flush=True)
sys.stdin.readline()
print(get_access_token(destination=destination, deadline_ms=5000), flush=True)
"""


def test_ten_callers_in_two_processes_and_eight_threads_cause_one_token_request(
    oauth_destination, token_server, local_network
):
    # Given a slow token endpoint and two other processes ready to need a token
    token_server.script = [token_reply("shared", delay_s=1.0), token_reply("second")]
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "aamdest.settings",
        "AAMDEST_ALLOW_PRIVATE_NETWORKS": "1",
        "AAMDEST_CA_BUNDLE": str(local_network.ca_file),
        "AAMDEST_REDIS_URL": django_settings.AAMDEST_REDIS_URL,
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
    }
    destination = oauth_destination
    args = [str(destination.pk), destination.oauth_token_url, CLIENT_ID, SECRET, destination.oauth_scope]
    command = [sys.executable, "-c", SUBPROCESS, *args]
    workers = [
        subprocess.Popen(command, env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.stdout.readline().strip() == "ready"

    # When all ten need a token at the same moment
    barrier = threading.Barrier(9)
    threads, (tokens, errors) = _need_token_in_threads(oauth_destination, 8, barrier)
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    barrier.wait()
    for thread in threads:
        thread.join(timeout=10)
    outputs = [worker.communicate(timeout=15)[0].strip() for worker in workers]

    # Then the partner saw one token request and everyone got its token
    assert errors == []
    assert tokens == ["shared"] * 8
    assert outputs == ["shared", "shared"]
    assert len(token_server.requests) == 1


def test_callers_waiting_on_a_failing_fetch_share_its_error_without_asking_again(
    oauth_destination, token_server
):
    token_server.script = [Reply(status=500, body=b"boom", delay_s=0.5)]
    barrier = threading.Barrier(4)

    threads, (tokens, errors) = _need_token_in_threads(oauth_destination, 3, barrier)
    barrier.wait()
    for thread in threads:
        thread.join(timeout=10)

    assert tokens == []
    assert errors == ["token endpoint failed: partner answered 500 Internal Server Error"] * 3
    assert len(token_server.requests) == 1
