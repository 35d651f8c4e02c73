"""Fixtures shared by the destinations tests: a destination, made-up DNS answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from destinations.models import Destination
from tests.destinations.resolver import Resolver
from tests.dns import use_resolver
from tests.factories import DestinationFactory


@pytest.fixture
def dns(settings) -> Iterator[Resolver]:
    """HTTPS and public addresses only, resolved by `Resolver`'s table instead of real DNS."""
    settings.AAMDEST_ALLOW_HTTP = False
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = False
    resolver = Resolver()
    with use_resolver(resolver):
        yield resolver


@pytest.fixture
def public_dns(settings) -> Iterator[None]:
    """Every host name resolves to a public address (there is no DNS here); private ones are refused."""
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = False
    with use_resolver(lambda host, port: ["93.184.216.34"]):
        yield


@pytest.fixture
def destination(db) -> Destination:
    return DestinationFactory()
