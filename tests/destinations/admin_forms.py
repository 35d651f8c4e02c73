"""What the admin tests post and open: admin page addresses and the destination change form's data."""

from __future__ import annotations

from destinations.models import Destination


def change_url(model, pk) -> str:
    return f"/admin/{model._meta.app_label}/{model._meta.model_name}/{pk}/change/"


def changelist_url(model) -> str:
    return f"/admin/{model._meta.app_label}/{model._meta.model_name}/"


def form_data(destination: Destination, **overrides) -> dict:
    """What the destination change form posts, secrets left blank, no mapping rows."""
    data = {
        name: getattr(destination, name)
        for name in (
            "name",
            "url",
            "client_id",
            "user_dpid",
            "aam_destination_id",
            "max_users_per_request",
            "max_wait_ms",
            "timeout_ms",
            "max_retries",
            "retry_delay_ms",
            "circuit_failure_threshold",
            "auth_mode",
            "signing_algorithm",
            "signing_header",
            "oauth_token_url",
            "oauth_client_id",
            "oauth_scope",
            "oauth_client_auth",
        )
    }
    data.update(enabled="on", realtime="on", circuit_breaker="on", batch_interval_hours="", signing_key="",
                oauth_client_secret="")
    data.update(
        {
            "mappings-TOTAL_FORMS": "0",
            "mappings-INITIAL_FORMS": "0",
            "mappings-MIN_NUM_FORMS": "0",
            "mappings-MAX_NUM_FORMS": "1000",
        }
    )
    data.update(overrides)
    return data
