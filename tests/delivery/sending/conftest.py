"""Fixtures shared by the sending tests: a local token endpoint and a destination using it."""

from __future__ import annotations

import pytest

from destinations.models import Destination
from tests.delivery.sending.token_calls import CLIENT_ID, SECRET
from tests.factories import DestinationFactory
from tests.local_partner import Partner
from tests.token_endpoint import token_reply


@pytest.fixture
def token_server(partner, token_cache) -> Partner:
    """The local partner as a token endpoint, answering one token; the token cache is empty."""
    partner.script = [token_reply()]
    return partner


@pytest.fixture
def oauth_destination(db, token_server) -> Destination:
    return DestinationFactory(
        auth_mode="oauth2",
        oauth_token_url=token_server.url,
        oauth_client_id=CLIENT_ID,
        oauth_client_secret=SECRET,
        oauth_scope="segments:write",
    )
