"""Fixtures of the partner tests: `start_receiver`, a receiver in a thread started from command-line
arguments; `receivers`, `manage.py receiver` in subprocesses that aamdest trusts; `token_proxy`.

The arguments of `start_receiver` go through the command's own parser, so every option is parsed as
on the command line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from partner.management.commands.receiver import Command, build_server
from tests.partner.receiver_processes import CountingTokenProxy, Receiver, Receivers
from tests.partner.receiving import Running


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


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("receiver-pki")


@pytest.fixture
def receivers(cert_dir: Path, settings, db, token_cache: redis.Redis) -> Iterator[Receivers]:
    """Start `manage.py receiver` processes that aamdest may reach and trusts; stopped after the test.

    The token cache starts empty: an earlier run's destination may have had the same id.
    """
    running = Receivers(cert_dir)
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = True  # the receiver is on this machine
    # The first receiver writes the CA; later ones reuse it (--cert-dir).
    settings.AAMDEST_CA_BUNDLE = str(running.ca_file)
    yield running
    for receiver in running.started:
        receiver.stop()


@pytest.fixture
def token_proxy(receivers: Receivers) -> Iterator[Callable[..., CountingTokenProxy]]:
    """Start a counting token endpoint in front of a receiver's /oauth/token; stopped after the test."""
    proxies: list[CountingTokenProxy] = []

    def start(receiver: Receiver, *, delay_s: float = 0.0) -> CountingTokenProxy:
        proxy = CountingTokenProxy(receiver=receiver, certificates=receivers.certificates(), delay_s=delay_s)
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.stop()
