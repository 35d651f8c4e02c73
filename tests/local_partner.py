"""Local HTTPS partners for tests: a scriptable endpoint and a stalling one.

Everything listens on 127.0.0.1 only. A `Partner` records every request it
received and answers from a script (a list of `Reply`, the last one repeating)
or from a function of the request. Its throwaway CA and certificate come from the
reference partner's own code, `partner.certificates.write_certificates`.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from partner.certificates import CertificateFiles, server_tls_context


@dataclass(frozen=True)
class Reply:
    """How the partner answers one request."""

    status: int = 200
    body: bytes = b"OK"
    delay_s: float = 0.0  # before the status line
    trickle_interval_s: float = 0.0  # > 0: send the body one byte per interval
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Partner:
    """A running HTTPS partner. Use `url`, `requests`, `script`."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    certificates: CertificateFiles
    script: list[Reply] = field(default_factory=lambda: [Reply()])
    responder: Callable[[Received], Reply] | None = None
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}/aam"

    def next_reply(self, received: Received) -> Reply:
        with self.lock:
            self.requests.append(received)
            if self.responder is not None:
                return self.responder(received)
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def wait_for_requests(self, count: int, timeout_s: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.02)
        with self.lock:
            raise AssertionError(f"expected {count} requests, got {len(self.requests)} in {timeout_s}s")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate small writes: without TCP_NODELAY,
    # Nagle and delayed ACKs add ~40 ms to every kept-alive request.
    disable_nagle_algorithm = True
    server: _PartnerHTTPServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        received = Received(self.path, {k: v for k, v in self.headers.items()}, body, time.monotonic())
        reply = self.server.partner.next_reply(received)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            if reply.trickle_interval_s:
                for byte in reply.body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(reply.trickle_interval_s)
            else:
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True

    do_GET = do_POST  # noqa: N815


class _PartnerHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    partner: Partner


def start_partner(certificates: CertificateFiles, *, host: str = "127.0.0.1") -> Partner:
    """Start an HTTPS partner on an ephemeral port of `host`."""
    server = _PartnerHTTPServer((host, 0), _Handler)
    context = server_tls_context(cert_file=certificates.cert_file, key_file=certificates.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    partner = Partner(server=server, thread=thread, certificates=certificates)
    server.partner = partner
    thread.start()
    return partner


class StallingServer:
    """Accepts TCP connections and never answers: the TLS handshake stalls."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.connections: list[socket.socket] = []
        self._stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.socket.getsockname()[1]

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}/aam"

    def _accept(self) -> None:
        self.socket.settimeout(0.1)
        while not self._stopped.is_set():
            try:
                connection, _ = self.socket.accept()
            except OSError:
                continue
            self.connections.append(connection)

    def stop(self) -> None:
        self._stopped.set()
        self.thread.join(timeout=2)
        for connection in self.connections:
            connection.close()
        self.socket.close()
