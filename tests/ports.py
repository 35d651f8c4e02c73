"""Loopback ports for the tests."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port nothing listens on now: free to bind, refused to connect to."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
