"""`manage.py receiver` in a subprocess for the auth-mode tests, and a token endpoint that counts.

Receivers share one `--cert-dir` in a temporary folder and listen on ephemeral
ports; aamdest trusts their CA through AAMDEST_CA_BUNDLE.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from partner.certificates import CertificateFiles, certificate_files
from tests.local_partner import Partner, Received, Reply, start_partner

PROJECT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30


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
