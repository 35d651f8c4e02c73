"""The `start_receiver` fixture: a receiver in a thread, started from command-line arguments.

The arguments go through the command's own parser, so every option is parsed as
on the command line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from partner.management.commands.receiver import Command, build_server
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
