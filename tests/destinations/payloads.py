"""What an operator posts to /api/v1/destinations/ in the destinations tests."""

from __future__ import annotations

URL = "/api/v1/destinations/"


def payload(**overrides) -> dict:
    """A valid destination at the public partner.example.com, with `overrides` on top."""
    return {
        "name": "Acme",
        "url": "https://partner.example.com/aam",
        "client_id": "74323",
        "user_dpid": 20914,
        "aam_destination_id": 423,
        **overrides,
    }
