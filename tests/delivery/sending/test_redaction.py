"""Every spelling of a credential an echo could use is redacted (CONTRACT §3)."""

from __future__ import annotations

import base64
import html
import json
from urllib.parse import quote, quote_plus

import pytest

from delivery.sending.redaction import REDACTED, redact_credentials, storable_text

CREDENTIAL = "tok/en+with=&<odd>chars"


@pytest.mark.parametrize(
    "spelling",
    [
        CREDENTIAL,
        quote_plus(CREDENTIAL, safe=""),
        quote(CREDENTIAL, safe=""),
        quote(CREDENTIAL, safe="").lower(),
        json.dumps(CREDENTIAL)[1:-1].replace("/", "\\/"),
        html.escape(CREDENTIAL),
        base64.b64encode(CREDENTIAL.encode()).decode(),
    ],
    ids=["as sent", "form", "percent", "lower-case percent", "JSON", "HTML", "Base64"],
)
def test_each_spelling_of_a_credential_is_redacted(spelling):
    redacted = redact_credentials(f"echo: {spelling} end", [CREDENTIAL])

    assert redacted == f"echo: {REDACTED} end"


def test_a_credential_too_short_to_be_one_leaves_the_text_alone():
    assert redact_credentials("a b c", ["b"]) == "a b c"


def test_storable_text_replaces_what_postgresql_refuses():
    assert storable_text("a\x00b\ud800c") == "a\ufffdb?c"
