"""The partner's HTTP server: it checks, prints and acknowledges each document (CONTRACT §6).

A threaded HTTP/1.1 server with keep-alive. Every POST goes, after `delay_ms`, to
the token endpoint (`TOKEN_PATH`, when OAuth is on) or to `Receiver.answer_data`,
which checks in this order: the bearer token, the HMAC signature, the content type,
the document (CONTRACT §1); then it fails `fail_rate` of the requests on purpose, and
prints a summary line per accepted document ("accepted delivery <id>
AAM_Destination_Id <id> User_count <n>") followed by the document unless
`summary_only`. A GET answers the count of accepted documents. TLS, when given, is
negotiated in each connection's own thread.
"""

from __future__ import annotations

import ipaddress
import json
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from partner.documents import DocumentError, parse_document
from partner.verification import TOKEN_PATH, Signing, TokenIssuer


@dataclass
class Receiver:
    """What the server checks and how it behaves; shared by all its threads."""

    signing: Signing | None = None
    tokens: TokenIssuer | None = None
    fail_rate: float = 0.0
    delay_ms: int = 0
    verbose: bool = False  # the document's JSON indented rather than on one line
    summary_only: bool = False  # only the one-line summary, not the document
    emit: Callable[[str], None] = print
    ack_log: Path | None = None

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted = 0
        # Opened once and unbuffered: each document's lines land in one write before its 200
        # leaves. Opening the file per document, under the lock, queued every answer behind it.
        self._ack_file = self.ack_log.open("ab", buffering=0) if self.ack_log else None

    def answer_data(self, *, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        """The status and JSON answer to a document POST; accepted documents are printed."""
        if self.tokens and not self.tokens.is_valid(headers.get("Authorization")):
            return self._refuse(401, "a bearer token this receiver issued is required")
        if self.signing and not self.signing.is_signed(headers=headers, body=body):
            return self._refuse(403, f"no valid {self.signing.algorithm} signature in {self.signing.header}")
        if not (headers.get("Content-Type") or "").lower().startswith("application/json"):
            return self._refuse(400, "Content-Type must be application/json")
        try:
            document = parse_document(body)
        except DocumentError as exc:
            return self._refuse(400, str(exc))
        if self.fail_rate and random.random() < self.fail_rate:
            return self._refuse(503, "simulated failure (--fail-rate)")
        self._record(delivery_id=headers.get("X-AAMDest-Delivery-Id") or "-", document=document)
        return 200, {"status": "accepted", "users": len(document["Users"])}

    def _refuse(self, status: int, message: str) -> tuple[int, dict[str, Any]]:
        self.emit(f"refused  {status} {message}")
        return status, {"error": message}

    def _record(self, *, delivery_id: str, document: dict[str, Any]) -> None:
        line = (f"accepted delivery {delivery_id} AAM_Destination_Id {document['AAM_Destination_Id']}"
                f" User_count {document['User_count']}")
        acks = b""
        if self._ack_file:
            now = f"{time.time():.6f}"
            acks = "".join(f"{now} {user['AAM_UUID']}\n" for user in document["Users"]).encode()
        with self.lock:
            self.accepted += 1
            if acks and self._ack_file:
                self._ack_file.write(acks)
        if self.summary_only:
            self.emit(line)
        else:
            # CONTRACT §6: it prints each document it accepts (after a summary line to grep for).
            printed = json.dumps(document, indent=2 if self.verbose else None, ensure_ascii=False)
            self.emit(f"{line}\n{printed}")

    def close(self) -> None:
        """Close the ack log (the server is stopping)."""
        if self._ack_file:
            self._ack_file.close()


class ReceiverRequestHandler(BaseHTTPRequestHandler):
    """One connection: POSTs go to the token endpoint or the document check, GETs get the count."""

    protocol_version = "HTTP/1.1"  # keep-alive: the benchmark reuses its connections
    server_version = "aamdest-receiver"
    timeout = 60  # seconds an idle kept-alive connection may hold its thread
    server: ReceiverServer

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            # Here, in the connection's own thread, so a stalled handshake
            # cannot hold the accepting loop.
            self.connection.do_handshake()

    def do_POST(self) -> None:  # noqa: N802 - the http.server protocol
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._answer(411, {"error": "Content-Length is required"})
            return
        body = self.rfile.read(int(length))
        receiver = self.server.receiver
        if receiver.delay_ms:
            time.sleep(receiver.delay_ms / 1000)
        if receiver.tokens and self.path.split("?")[0] == TOKEN_PATH:
            self._answer(*receiver.tokens.answer(headers=self.headers, body=body))
        else:
            self._answer(*receiver.answer_data(headers=self.headers, body=body))

    def do_GET(self) -> None:  # noqa: N802 - the http.server protocol
        self._answer(200, {"status": "ok", "accepted": self.server.receiver.accepted})

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if status == 401:
            invalid_client = payload.get("error") == "invalid_client"
            self.send_header("WWW-Authenticate", 'Basic realm="token"' if invalid_client else "Bearer")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - our own lines say enough
        pass


class ReceiverServer(ThreadingHTTPServer):
    """The bound server for one `Receiver`: a thread per connection, TLS when `tls` is given."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(self, *, host: str, port: int, receiver: Receiver, tls: ssl.SSLContext | None,
                 reuse_port: bool = False) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.allow_reuse_port = reuse_port  # several processes on one port: the kernel balances them
        self.receiver = receiver
        self.tls = tls
        super().__init__((host, port), ReceiverRequestHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        # Headers and body leave in separate writes: without this, Nagle's
        # algorithm meets the client's delayed ACK and each answer waits ~40 ms.
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            connection = self.tls.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return connection, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up or fail the handshake are their own business

    def server_close(self) -> None:
        super().server_close()
        self.receiver.close()

    @property
    def url(self) -> str:
        """Where it listens, e.g. https://127.0.0.1:8443/ or http://[::1]:8080/."""
        host, port = self.socket.getsockname()[:2]  # what server_address holds, typed as (str, int)
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{shown}:{port}/"


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine only (plain HTTP is allowed there and nowhere else)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
