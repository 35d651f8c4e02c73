"""`manage.py receiver`: the reference partner endpoint (SPEC §6).

A threaded HTTP/1.1 server with keep-alive that takes aamdest's documents the
way a demanding partner would: it checks the bearer token it issued (with
`--client-id/--client-secret`, also serving `POST /oauth/token`), then the HMAC
signature (with `--signing-key`), then that the body is a document of SPEC §1;
it answers 200 and prints one line per accepted document. Any path takes
documents, except the token path when OAuth is on.

It serves HTTPS with a throwaway CA and server certificate it writes to
`--cert-dir` (so the sender can trust it through AAMDEST_CA_BUNDLE), with a
given `--cert/--cert-key`, or plain HTTP on loopback (`--http`).
`--fail-rate` and `--delay-ms` make it misbehave for demos; `--ack-log` appends
"<unix time> <AAM_UUID>" per acknowledged user, for the benchmark.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import ipaddress
import json
import os
import random
import re
import secrets
import signal
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.core.management.base import BaseCommand, CommandError, CommandParser

from destinations.signing import sign_body

TOKEN_PATH = "/oauth/token"
CERTIFICATE_HOSTS = ("localhost", "127.0.0.1", "::1")
CERTIFICATE_DAYS = 365
DOCUMENT_KEYS = ("ProcessTime", "User_DPID", "Client_ID", "AAM_Destination_Id", "User_count", "Users")
USER_KEYS = ("AAM_UUID", "DataPartner_UUID", "AAM_Regions", "Segments")
SEGMENT_KEYS = ("Segment_ID", "Status", "DateTime")
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
AAM_TIME = re.compile(r"(\w{3}) (\w{3}) (\d{2}) (\d{2}):(\d{2}):(\d{2}) UTC (\d{4})")
DIGITS = re.compile(r"[0-9]+")


# --- certificates ------------------------------------------------------------


@dataclass(frozen=True)
class CertificateFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


def ensure_certificates(directory: Path) -> CertificateFiles:
    """Reuse the CA and server certificate in `directory`, or write new ones.

    Reusing them keeps a sender that already trusts the CA working across
    restarts; they are replaced when missing or within a day of expiring.
    """
    files = CertificateFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    if _is_reusable(files):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _build_ca(ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _build_server_certificate(key=key, ca_key=ca_key, ca_cert=ca_cert)
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(files.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as key_out:
        key_out.write(pem_key)
    return files


def _is_reusable(files: CertificateFiles) -> bool:
    if not (files.ca_file.is_file() and files.cert_file.is_file() and files.key_file.is_file()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
    except ValueError:
        return False
    return cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=1)


def _certificate_builder(
    *, subject: x509.Name, issuer: x509.Name, public_key: Any
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=CERTIFICATE_DAYS))
    )


def _build_ca(ca_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aamdest receiver throwaway CA")])
    usage = x509.KeyUsage(
        digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
        key_encipherment=False, data_encipherment=False, key_agreement=False,
        encipher_only=False, decipher_only=False,
    )
    return (
        _certificate_builder(subject=name, issuer=name, public_key=ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _build_server_certificate(
    *, key: ec.EllipticCurvePrivateKey, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> x509.Certificate:
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    names += [x509.IPAddress(ipaddress.ip_address(host)) for host in CERTIFICATE_HOSTS[1:]]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return (
        _certificate_builder(subject=subject, issuer=ca_cert.subject, public_key=key.public_key())
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(authority, critical=False)
        .sign(ca_key, hashes.SHA256())
    )


# --- the document (SPEC §1) --------------------------------------------------


class DocumentError(ValueError):
    """The body is not a document of SPEC §1; the message says where."""


def parse_document(body: bytes) -> dict[str, Any]:
    """Return the document in `body`, or raise DocumentError naming the first problem."""
    try:
        document = json.loads(body.decode("utf-8"), object_pairs_hook=_refuse_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DocumentError(f"the body is not UTF-8 JSON: {exc}") from None
    _check_keys(document, DOCUMENT_KEYS, where="the document")
    for key in DOCUMENT_KEYS[:5]:
        _check_string(document[key], where=key, digits=key != "Client_ID" and key != "ProcessTime")
    _check_time(document["ProcessTime"], where="ProcessTime")
    users = document["Users"]
    if not isinstance(users, list):
        raise DocumentError("Users is not a list")
    if document["User_count"] != str(len(users)):
        raise DocumentError(f"User_count is {document['User_count']!r} but Users holds {len(users)}")
    for index, user in enumerate(users):
        _check_user(user, where=f"Users[{index}]")
    return document


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise DocumentError(f"an object repeats a key: {keys}")
    return dict(pairs)


def _check_keys(value: Any, expected: tuple[str, ...], *, where: str) -> None:
    if not isinstance(value, dict):
        raise DocumentError(f"{where} is not an object")
    if tuple(value) != expected:
        raise DocumentError(f"{where} has keys {list(value)}, expected {list(expected)} in that order")


def _check_string(value: Any, *, where: str, digits: bool = False) -> None:
    if not isinstance(value, str):
        raise DocumentError(f"{where} is {json.dumps(value)}, not a JSON string")
    if digits and not DIGITS.fullmatch(value):
        raise DocumentError(f"{where} is {value!r}, not an integer written as a string")


def _check_time(value: str, *, where: str) -> None:
    match = AAM_TIME.fullmatch(value)
    if not match or match[1] not in DAYS or match[2] not in MONTHS:
        raise DocumentError(f"{where} is {value!r}, not 'EEE MMM dd HH:mm:ss UTC yyyy'")
    try:
        moment = dt.datetime(int(match[7]), MONTHS.index(match[2]) + 1, int(match[3]),
                             int(match[4]), int(match[5]), int(match[6]))
    except ValueError:
        raise DocumentError(f"{where} is {value!r}, not a real date and time") from None
    if DAYS[moment.weekday()] != match[1]:
        raise DocumentError(f"{where} is {value!r}, but that day is a {DAYS[moment.weekday()]}")


def _check_user(user: Any, *, where: str) -> None:
    _check_keys(user, USER_KEYS, where=where)
    _check_string(user["AAM_UUID"], where=f"{where}.AAM_UUID")
    if not user["AAM_UUID"]:
        raise DocumentError(f"{where}.AAM_UUID is empty")
    _check_string(user["DataPartner_UUID"], where=f"{where}.DataPartner_UUID")
    regions = user["AAM_Regions"]
    if not isinstance(regions, list):
        raise DocumentError(f"{where}.AAM_Regions is not a list")
    for index, region in enumerate(regions):
        _check_string(region, where=f"{where}.AAM_Regions[{index}]", digits=True)
    numbers = [int(region) for region in regions]
    if numbers != sorted(set(numbers)):
        raise DocumentError(f"{where}.AAM_Regions {regions} is not deduplicated in ascending order")
    if not isinstance(user["Segments"], list):
        raise DocumentError(f"{where}.Segments is not a list")
    for index, segment in enumerate(user["Segments"]):
        _check_segment(segment, where=f"{where}.Segments[{index}]")


def _check_segment(segment: Any, *, where: str) -> None:
    _check_keys(segment, SEGMENT_KEYS, where=where)
    _check_string(segment["Segment_ID"], where=f"{where}.Segment_ID")
    if segment["Status"] not in ("0", "1"):
        raise DocumentError(f"{where}.Status is {json.dumps(segment['Status'])}, not \"0\" or \"1\"")
    _check_string(segment["DateTime"], where=f"{where}.DateTime")
    _check_time(segment["DateTime"], where=f"{where}.DateTime")


# --- authentication ----------------------------------------------------------


@dataclass(frozen=True)
class Signing:
    """HMAC verification: any key's signature in `header` or `header`-New."""

    keys: tuple[str, ...]
    algorithm: str
    header: str

    def is_signed(self, *, headers: Any, body: bytes) -> bool:
        values = (headers.get(self.header), headers.get(f"{self.header}-New"))
        given = [value.encode() for value in values if value]
        for key in self.keys:
            expected = sign_body(body=body, key=key, algorithm=self.algorithm).encode()
            if any(hmac.compare_digest(expected, value) for value in given):
                return True
        return False


class TokenIssuer:
    """The client credentials grant for one client, and the bearer tokens it issued."""

    def __init__(self, *, client_id: str, client_secret: str, ttl_s: int) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.ttl_s = ttl_s  # 0: tokens never expire and the answer has no expires_in
        self.issued: dict[str, float | None] = {}  # token -> monotonic expiry (None: never)
        self.lock = threading.Lock()

    def answer(self, *, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        """The status and JSON answer to a token request."""
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        if form.get("grant_type") != ["client_credentials"]:
            return 400, {"error": "unsupported_grant_type"}
        if not self._is_client(credentials=_client_credentials(headers=headers, form=form)):
            return 401, {"error": "invalid_client"}
        token = secrets.token_urlsafe(32)
        with self.lock:
            now = time.monotonic()
            self.issued = {key: end for key, end in self.issued.items() if end is None or end > now}
            self.issued[token] = now + self.ttl_s if self.ttl_s else None
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if self.ttl_s:
            answer["expires_in"] = self.ttl_s
        return 200, answer

    def is_valid(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        with self.lock:
            if token.strip() not in self.issued:
                return False
            end = self.issued[token.strip()]
        return end is None or end > time.monotonic()

    def _is_client(self, *, credentials: tuple[str, str] | None) -> bool:
        if credentials is None:
            return False
        same_id = hmac.compare_digest(credentials[0].encode(), self.client_id.encode())
        same_secret = hmac.compare_digest(credentials[1].encode(), self.client_secret.encode())
        return same_id and same_secret


def _client_credentials(*, headers: Any, form: dict[str, list[str]]) -> tuple[str, str] | None:
    """(id, secret) from HTTP Basic or from the form, or None when absent, malformed or given twice."""
    scheme, _, encoded = (headers.get("Authorization") or "").partition(" ")
    in_form = "client_id" in form or "client_secret" in form
    if scheme.lower() == "basic":
        if in_form:
            return None  # RFC 6749 §2.3: a client must not use more than one method
        try:
            user, colon, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (unquote_plus(user), unquote_plus(password)) if colon else None
    if len(form.get("client_id", [])) == 1 and len(form.get("client_secret", [])) == 1:
        return form["client_id"][0], form["client_secret"][0]
    return None


# --- the server --------------------------------------------------------------


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
            # SPEC §6: it prints each document it accepts (after a summary line to grep for).
            printed = json.dumps(document, indent=2 if self.verbose else None, ensure_ascii=False)
            self.emit(f"{line}\n{printed}")

    def close(self) -> None:
        """Close the ack log (the server is stopping)."""
        if self._ack_file:
            self._ack_file.close()


class ReceiverRequestHandler(BaseHTTPRequestHandler):
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
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, *, host: str, port: int, receiver: Receiver, tls: ssl.SSLContext | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
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
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{shown}:{port}/"


def server_tls_context(*, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


# --- the command -------------------------------------------------------------


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Command(BaseCommand):
    help = "Run the reference partner endpoint: verifies, prints and acknowledges aamdest's documents."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, required=True, help="0 picks a free port (printed).")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--http", action="store_true", help="Plain HTTP (loopback hosts only).")
        parser.add_argument("--cert-dir", type=Path, help="Where the generated CA and certificate go.")
        parser.add_argument("--cert", type=Path, help="A PEM server certificate (chain) to serve.")
        parser.add_argument("--cert-key", type=Path, help="The private key of --cert.")
        parser.add_argument("--signing-key", action="append", default=[], help="Repeatable.")
        parser.add_argument("--algorithm", choices=("sha256", "sha1", "md5"), default="sha256")
        parser.add_argument("--header", default="X-Signature", help="Also accepted in <header>-New.")
        parser.add_argument("--client-id")
        parser.add_argument("--client-secret")
        parser.add_argument("--token-ttl", type=int, default=3600, help="Seconds; 0: no expires_in.")
        parser.add_argument("--fail-rate", type=float, default=0.0, help="Answer 503 to this share (0..1).")
        parser.add_argument("--delay-ms", type=int, default=0, help="Wait before every answer.")
        parser.add_argument("--ack-log", type=Path, help="Append '<unix time> <AAM_UUID>' per accepted user.")
        parser.add_argument("--verbose", action="store_true", help="Indent each accepted document's JSON.")
        parser.add_argument(
            "--summary-only", action="store_true",
            help="Print one summary line per accepted document instead of the document (benchmarks).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        server = build_server(options, emit=self._emit)
        # SIGTERM (run_demo, bench, service managers) stops it as Ctrl-C does.
        signal.signal(signal.SIGTERM, _interrupt)
        self._emit(f"aamdest receiver listening on {server.url} (documents on any path)")
        for line in describe(server=server, options=options):
            self._emit(line)
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
            self._emit(f"stopped after accepting {server.receiver.accepted} document(s)")

    def _emit(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()


def build_server(options: dict[str, Any], *, emit: Callable[[str], None]) -> ReceiverServer:
    """A bound, not yet serving, server for the command's parsed `options`; CommandError when unusable."""
    receiver = Receiver(
        signing=_signing_from(options), tokens=_tokens_from(options),
        fail_rate=options["fail_rate"], delay_ms=options["delay_ms"], verbose=options["verbose"],
        summary_only=options.get("summary_only", False),
        emit=emit, ack_log=options["ack_log"],
    )
    if not 0 <= receiver.fail_rate <= 1 or receiver.delay_ms < 0:
        raise CommandError("--fail-rate must be within 0..1 and --delay-ms at least 0.")
    try:
        return ReceiverServer(host=options["host"], port=options["port"], receiver=receiver,
                              tls=_tls_from(options))
    except OSError as exc:
        raise CommandError(f"cannot listen on {options['host']} port {options['port']}: {exc}") from None


def describe(*, server: ReceiverServer, options: dict[str, Any]) -> list[str]:
    lines = []
    if server.tls and not options["cert"]:
        cert_dir = options["cert_dir"]
        lines.append(f"certificates in {cert_dir}: trust it with AAMDEST_CA_BUNDLE={cert_dir / 'ca.pem'}")
    if server.receiver.signing:
        signing = server.receiver.signing
        lines.append(f"verifying HMAC-{signing.algorithm.upper()} in {signing.header} or {signing.header}-New"
                     f" with {len(signing.keys)} key(s)")
    if server.receiver.tokens:
        lines.append(f"issuing bearer tokens at POST {server.url.rstrip('/')}{TOKEN_PATH}")
    return lines


def _signing_from(options: dict[str, Any]) -> Signing | None:
    if not options["signing_key"]:
        return None
    if any(not key for key in options["signing_key"]) or not options["header"].strip():
        raise CommandError("--signing-key and --header must not be empty.")
    return Signing(keys=tuple(options["signing_key"]), algorithm=options["algorithm"],
                   header=options["header"].strip())


def _tokens_from(options: dict[str, Any]) -> TokenIssuer | None:
    client_id, client_secret = options["client_id"], options["client_secret"]
    if client_id is None and client_secret is None:
        return None
    if not client_id or not client_secret:
        raise CommandError("--client-id and --client-secret go together and must not be empty.")
    if options["token_ttl"] < 0:
        raise CommandError("--token-ttl must be at least 0.")
    return TokenIssuer(client_id=client_id, client_secret=client_secret, ttl_s=options["token_ttl"])


def _tls_from(options: dict[str, Any]) -> ssl.SSLContext | None:
    if options["http"]:
        if options["cert"] or options["cert_key"] or options["cert_dir"]:
            raise CommandError("--http serves no certificate: drop --cert, --cert-key and --cert-dir.")
        if not _is_loopback(options["host"]):
            raise CommandError(f"--http is allowed on loopback only, not on {options['host']}.")
        return None
    if bool(options["cert"]) != bool(options["cert_key"]):
        raise CommandError("--cert and --cert-key go together.")
    if options["cert"]:
        if options["cert_dir"]:
            raise CommandError("--cert-dir generates a certificate: drop it when giving --cert.")
        cert_file, key_file = options["cert"], options["cert_key"]
    else:
        options["cert_dir"] = options["cert_dir"] or Path(tempfile.mkdtemp(prefix="aamdest-receiver-"))
        files = ensure_certificates(options["cert_dir"].resolve())
        cert_file, key_file = files.cert_file, files.key_file
    try:
        return server_tls_context(cert_file=cert_file, key_file=key_file)
    except (OSError, ssl.SSLError) as exc:
        raise CommandError(f"cannot load the certificate {cert_file}: {exc}") from None
