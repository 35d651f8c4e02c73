"""How the partner authenticates a request (CONTRACT §3): HMAC signatures and OAuth bearer tokens.

`Signing` accepts a body signed with any of its keys, in its header or in the
header's "-New" twin used during a key rotation. `TokenIssuer` runs the client
credentials grant for one client (credentials in HTTP Basic or in the form, never
both) and recognises the bearer tokens it issued until they expire.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from destinations.signing import sign_body

TOKEN_PATH = "/oauth/token"


@dataclass(frozen=True)
class Signing:
    """HMAC verification: any key's signature in `header` or `header`-New."""

    keys: tuple[str, ...]
    algorithm: str
    header: str

    def is_signed(self, *, headers: Any, body: bytes) -> bool:
        """Whether either header holds the signature of `body` made with any of the keys."""
        values = (headers.get(self.header), headers.get(f"{self.header}-New"))
        given = [value.encode() for value in values if value]
        for key in self.keys:
            expected = sign_body(body=body, key=key, algorithm=self.algorithm).encode()
            if any(hmac.compare_digest(expected, value) for value in given):
                return True
        return False


class TokenIssuer:
    """The client credentials grant for one client, and the bearer tokens it issued."""

    def __init__(self, *, client_id: str, client_secret: str, ttl_s: int) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.ttl_s = ttl_s  # 0: tokens never expire and the answer has no expires_in
        self.issued: dict[str, float | None] = {}  # token -> monotonic expiry (None: never)
        self.lock = threading.Lock()

    def answer(self, *, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        """The status and JSON answer to a token request."""
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        if form.get("grant_type") != ["client_credentials"]:
            return 400, {"error": "unsupported_grant_type"}
        if not self._is_client(credentials=_client_credentials(headers=headers, form=form)):
            return 401, {"error": "invalid_client"}
        token = secrets.token_urlsafe(32)
        with self.lock:
            now = time.monotonic()
            self.issued = {key: end for key, end in self.issued.items() if end is None or end > now}
            self.issued[token] = now + self.ttl_s if self.ttl_s else None
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer"}
        if self.ttl_s:
            answer["expires_in"] = self.ttl_s
        return 200, answer

    def is_valid(self, authorization: str | None) -> bool:
        """Whether `authorization` is "Bearer <token>" with a token issued here and not yet expired."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        with self.lock:
            if token.strip() not in self.issued:
                return False
            end = self.issued[token.strip()]
        return end is None or end > time.monotonic()

    def _is_client(self, *, credentials: tuple[str, str] | None) -> bool:
        if credentials is None:
            return False
        same_id = hmac.compare_digest(credentials[0].encode(), self.client_id.encode())
        same_secret = hmac.compare_digest(credentials[1].encode(), self.client_secret.encode())
        return same_id and same_secret


def _client_credentials(*, headers: Any, form: dict[str, list[str]]) -> tuple[str, str] | None:
    """(id, secret) from HTTP Basic or from the form, or None when absent, malformed or given twice."""
    scheme, _, encoded = (headers.get("Authorization") or "").partition(" ")
    in_form = "client_id" in form or "client_secret" in form
    if scheme.lower() == "basic":
        if in_form:
            return None  # RFC 6749 §2.3: a client must not use more than one method
        try:
            user, colon, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (unquote_plus(user), unquote_plus(password)) if colon else None
    if len(form.get("client_id", [])) == 1 and len(form.get("client_secret", [])) == 1:
        return form["client_id"][0], form["client_secret"][0]
    return None
