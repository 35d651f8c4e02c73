"""The partner's HMAC signature checks and the OAuth tokens it issues (partner.verification, CONTRACT §3)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import requests

from tests.partner.receiving import BODY, DOCUMENT, JSON, Running, hmac_base64


def test_it_accepts_a_signature_made_with_any_of_its_keys(start_receiver):
    receiver = start_receiver("--signing-key", "old", "--signing-key", "new")

    response = receiver.post(headers={**JSON, "X-Signature": hmac_base64(body=BODY, key="new")})

    assert response.status_code == 200


def test_it_refuses_a_signature_made_with_another_key_with_403(start_receiver):
    receiver = start_receiver("--signing-key", "partner-key")

    wrong = receiver.post(headers={**JSON, "X-Signature": hmac_base64(body=BODY, key="other-key")})
    missing = receiver.post()

    assert (wrong.status_code, missing.status_code) == (403, 403)
    assert receiver.lines[0].startswith("refused  403")


def test_it_refuses_a_signature_of_other_bytes_than_the_body(start_receiver):
    receiver = start_receiver("--signing-key", "k")
    reformatted = json.dumps(DOCUMENT, indent=1).encode()

    response = receiver.post(reformatted, headers={**JSON, "X-Signature": hmac_base64(body=BODY, key="k")})

    assert response.status_code == 403


def test_during_a_key_rotation_it_accepts_the_new_keys_signature_in_the_new_header(start_receiver):
    receiver = start_receiver("--signing-key", "new")
    headers = {**JSON, "X-Signature": hmac_base64(body=BODY, key="old"),
               "X-Signature-New": hmac_base64(body=BODY, key="new")}

    assert receiver.post(headers=headers).status_code == 200


def test_it_reads_the_signature_from_the_header_and_algorithm_it_was_given(start_receiver):
    receiver = start_receiver("--signing-key", "k", "--algorithm", "md5", "--header", "X-Partner-Sig")

    md5, sha256 = hmac_base64(body=BODY, key="k", digest="md5"), hmac_base64(body=BODY, key="k")
    in_default_header = receiver.post(headers={**JSON, "X-Signature": md5})
    with_sha256 = receiver.post(headers={**JSON, "X-Partner-Sig": sha256})
    right = receiver.post(headers={**JSON, "X-Partner-Sig": md5})

    assert (in_default_header.status_code, with_sha256.status_code, right.status_code) == (403, 403, 200)


def _token(receiver: Running, **kwargs: Any) -> requests.Response:
    return requests.post(f"{receiver.url}oauth/token", verify=str(receiver.ca_file), timeout=5, **kwargs)


OAUTH = ("--client-id", "partner id", "--client-secret", "s3cr:t%+")


FORM_CREDENTIALS = {"grant_type": "client_credentials", "client_id": "partner id",
                    "client_secret": "s3cr:t%+"}


def test_it_issues_a_bearer_token_for_credentials_in_http_basic_urlencoded(start_receiver):
    receiver = start_receiver(*OAUTH, "--token-ttl", "120")
    basic = {"Authorization": "Basic " + base64.b64encode(b"partner+id:s3cr%3At%25%2B").decode()}

    response = _token(receiver, data={"grant_type": "client_credentials"}, headers=basic)

    assert response.status_code == 200
    assert response.json()["token_type"] == "Bearer"
    assert response.json()["expires_in"] == 120
    assert len(response.json()["access_token"]) >= 32


def test_it_issues_a_bearer_token_for_credentials_in_form_fields(start_receiver):
    receiver = start_receiver(*OAUTH)

    response = _token(receiver, data=FORM_CREDENTIALS)

    assert response.status_code == 200
    assert response.json()["expires_in"] == 3600


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"auth": ("partner id", "wrong")},
        {"data": FORM_CREDENTIALS, "auth": ("partner id", "s3cr:t%+")},
        {"data": {"client_id": "partner id"}},
        {},
    ],
    ids=["wrong secret", "both methods at once", "no secret", "no credentials"],
)
def test_it_answers_invalid_client_with_401(start_receiver, request_kwargs):
    receiver = start_receiver(*OAUTH)
    data = {"grant_type": "client_credentials", **request_kwargs.pop("data", {})}
    if "auth" in request_kwargs:
        # requests would send the raw pair; the grant wants it urlencoded.
        user, password = (requests.utils.quote(part, safe="") for part in request_kwargs.pop("auth"))
        encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
        request_kwargs["headers"] = {"Authorization": f"Basic {encoded}"}

    response = _token(receiver, data=data, **request_kwargs)

    assert response.status_code == 401
    assert response.json() == {"error": "invalid_client"}


def _issued_token(receiver: Running) -> str:
    return _token(receiver, data=FORM_CREDENTIALS).json()["access_token"]


def test_it_accepts_data_only_with_a_bearer_token_it_issued(start_receiver):
    receiver = start_receiver(*OAUTH)
    token = _issued_token(receiver)

    without = receiver.post()
    made_up = receiver.post(headers={**JSON, "Authorization": "Bearer not-a-token-it-issued"})
    issued = receiver.post(headers={**JSON, "Authorization": f"Bearer {token}"})

    assert (without.status_code, made_up.status_code, issued.status_code) == (401, 401, 200)


def test_it_refuses_a_token_once_it_expired(start_receiver):
    receiver = start_receiver(*OAUTH, "--token-ttl", "1")
    token = _issued_token(receiver)

    time.sleep(1.1)

    assert receiver.post(headers={**JSON, "Authorization": f"Bearer {token}"}).status_code == 401


def test_with_a_token_ttl_of_zero_tokens_have_no_expires_in(start_receiver):
    receiver = start_receiver(*OAUTH, "--token-ttl", "0")

    answer = _token(receiver, data=FORM_CREDENTIALS).json()

    assert "expires_in" not in answer
    bearer = {"Authorization": f"Bearer {answer['access_token']}"}
    assert receiver.post(headers={**JSON, **bearer}).status_code == 200


def test_it_checks_both_the_token_and_the_signature_when_given_both(start_receiver):
    receiver = start_receiver(*OAUTH, "--signing-key", "k")
    bearer = {"Authorization": f"Bearer {_issued_token(receiver)}"}

    unsigned = receiver.post(headers={**JSON, **bearer})
    signed = receiver.post(headers={**JSON, **bearer, "X-Signature": hmac_base64(body=BODY, key="k")})

    assert (unsigned.status_code, signed.status_code) == (403, 200)
