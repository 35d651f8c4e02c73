"""`manage.py receiver`: the reference partner endpoint (CONTRACT §6).

This command only turns its options into the `partner` app's objects and runs the
server. The server (`partner.server`) checks the bearer token it issued (with
`--client-id/--client-secret`, also serving `POST /oauth/token`), then the HMAC
signature (with `--signing-key`), then that the body is a document of CONTRACT §1;
it answers 200 and prints one line per accepted document. Any path takes
documents, except the token path when OAuth is on.

It serves HTTPS with a throwaway CA and server certificate it writes to
`--cert-dir` (so the sender can trust it through AAMDEST_CA_BUNDLE), with a
given `--cert/--cert-key`, or plain HTTP on loopback (`--http`).
`--fail-rate` and `--delay-ms` make it misbehave for demos; `--ack-log` appends
"<unix time> <AAM_UUID>" per acknowledged user, for the benchmark.
"""

from __future__ import annotations

import signal
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from partner.certificates import ensure_certificates, server_tls_context
from partner.server import Receiver, ReceiverServer, is_loopback
from partner.verification import TOKEN_PATH, Signing, TokenIssuer


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


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
        parser.add_argument(
            "--reuse-port", action="store_true",
            help="Share the port with other receivers started so (SO_REUSEPORT): the kernel spreads the "
                 "connections over them, a core each (benchmarks).",
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
                              tls=_tls_from(options), reuse_port=options.get("reuse_port", False))
    except OSError as exc:
        raise CommandError(f"cannot listen on {options['host']} port {options['port']}: {exc}") from None


def describe(*, server: ReceiverServer, options: dict[str, Any]) -> list[str]:
    """The lines printed under the banner: where the CA is, what it verifies, where tokens are issued."""
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
        if not is_loopback(options["host"]):
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
