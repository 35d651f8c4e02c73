"""The OAuth 2.0 client-credentials request to a destination's token endpoint (CONTRACT §3).

Posted through `delivery.sending.http.post` (same deadline, same address policy, no
redirects); every request is counted for /metrics (`delivery.counters`). The
shared cache in front of it is `delivery.sending.tokens`.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from urllib.parse import quote_plus, urlencode

from delivery.counters import count_token_fetch
from delivery.sending.http import HttpRequest, HttpResult, post
from delivery.sending.redaction import redact_credentials
from destinations.models import Destination, OAuthClientAuth

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-www-form-urlencoded;charset=UTF-8"


class TokenError(Exception):
    """The token endpoint failed; the message says why and never holds a secret."""


def failed(why: str) -> TokenError:
    """A TokenError saying that the token endpoint failed, and why."""
    return TokenError(f"token endpoint failed: {why}")


def fetch_token(*, destination: Destination, timeout_ms: int) -> tuple[str, int | None]:
    """POST the client-credentials grant; return (access_token, expires_in or None). Raises TokenError."""
    if timeout_ms <= 0:
        raise failed("no time left before the attempt's deadline")
    body, headers = _token_request(destination)
    url = destination.oauth_token_url
    result = post(HttpRequest(url=url, body=body, headers=headers, timeout_ms=timeout_ms))
    try:
        token, expires_in = _parse_answer(result)
    except TokenError as error:
        count_token_fetch(destination_id=destination.pk, outcome="error")
        raise TokenError(_redact(str(error), destination)) from None
    count_token_fetch(destination_id=destination.pk, outcome="ok")
    logger.info("fetched an OAuth token for destination %s (expires_in %s)", destination.pk, expires_in)
    return token, expires_in


def _token_request(destination: Destination) -> tuple[bytes, dict[str, str]]:
    """The form body and headers; credentials in Basic auth or in the form, never both."""
    form = {"grant_type": "client_credentials"}
    if destination.oauth_scope:
        form["scope"] = destination.oauth_scope
    headers = {"Content-Type": CONTENT_TYPE, "Accept": "application/json"}
    client_id, secret = destination.oauth_client_id, destination.oauth_client_secret
    if destination.oauth_client_auth == OAuthClientAuth.BODY:
        form |= {"client_id": client_id, "client_secret": secret}
    else:
        # RFC 6749 §2.3.1: each part form-urlencoded before Base64.
        pair = f"{quote_plus(client_id, safe='')}:{quote_plus(secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return urlencode(form).encode("ascii"), headers


# RFC 6750 §2.1 b64token: the only characters a bearer token may have.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def _parse_answer(result: HttpResult) -> tuple[str, int | None]:
    if not result.is_success:
        # The one HTTP module words a status for a partner ("partner answered 500 …"): here the
        # token endpoint answered, and the attempt's error must not blame the partner.
        error = re.sub(r"^partner answered", "it answered", result.error)
        raise failed(f"{error}{_oauth_error(result)}")
    try:
        answer = json.loads(result.body)
    except ValueError:
        raise failed(f"the answer is not JSON: {result.response_excerpt[:200]!r}") from None
    token = answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise failed("the answer has no access_token")
    if not _B64TOKEN.fullmatch(token):
        # It goes into an Authorization header: never echo it.
        raise failed("the access_token is not a valid bearer token")
    token_type = answer.get("token_type", "bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise failed(f"token_type {token_type!r} is not supported (only bearer)")
    return token, _expires_in(answer.get("expires_in"))


def _expires_in(value: object) -> int | None:
    if value is None:
        return None
    try:
        seconds = int(float(str(value)))
    except (ValueError, OverflowError):
        seconds = 0
    if seconds <= 0:
        raise failed(f"expires_in {value!r} is not a positive number of seconds")
    return seconds


def _oauth_error(result: HttpResult) -> str:
    """RFC 6749 §5.2's error code and description, when the endpoint gave them."""
    try:
        answer = json.loads(result.body)
    except ValueError:
        return ""
    if not isinstance(answer, dict) or not isinstance(answer.get("error"), str):
        return ""
    description = answer.get("error_description")
    return f" ({answer['error']}: {description})" if isinstance(description, str) else f" ({answer['error']})"


def _redact(message: str, destination: Destination) -> str:
    # An endpoint could echo the request back in its error (the Basic credential, the form's
    # client_secret); never pass on any spelling of what authenticated it.
    _, headers = _token_request(destination)
    basic = headers.get("Authorization", "")
    pair = base64.b64decode(basic.removeprefix("Basic ")).decode() if basic else ""
    credentials = (destination.oauth_client_secret, basic, basic.removeprefix("Basic "), pair)
    return redact_credentials(message, credentials)
