"""A made-up DNS for the address-policy tests (installed by the `dns` fixture)."""

from __future__ import annotations

import socket

import pytest
from django.core.exceptions import ValidationError

from destinations.network import validate_url

PUBLIC = "93.184.216.34"


class Resolver:
    """A made-up DNS: a table of names, which a test may re-point."""

    def __init__(self) -> None:
        self.table = {
            "partner.example.com": [PUBLIC],
            "auth.example.com": [PUBLIC],
            "localhost": ["127.0.0.1", "::1"],
            "internal.example.com": ["10.0.0.7"],
            "mixed.example.com": [PUBLIC, "192.168.0.9"],
        }

    def __call__(self, host: str, port: int) -> list[str]:
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


def resolver_of(table: dict[str, list[str]]):
    calls: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append((host, port))
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def refusal(url: str) -> str:
    with pytest.raises(ValidationError) as caught:
        validate_url(url, field="url")
    return caught.value.messages[0]
