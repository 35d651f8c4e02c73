"""`manage.py receiver` (`partner/management/commands/receiver.py`): its options and the real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django.core.management.base import CommandError

from tests.partner.receiving import BODY, JSON

PROJECT = Path(__file__).resolve().parents[2]


def test_it_refuses_plain_http_on_a_host_that_is_not_loopback(start_receiver):
    with pytest.raises(CommandError, match="loopback"):
        start_receiver("--http", "--host", "0.0.0.0")


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
