"""What aamdest keeps of a partner's answer (CONTRACT §3): never a credential it sent, any bytes.

A partner or token endpoint may echo the request back (headers, form body), so the bearer token,
the signatures and the client credentials of that exchange are taken out of the answer and the
error before they are stored, in each spelling an echo could use (as sent, URL-encoded,
JSON-escaped, Base64). PostgreSQL's text refuses NUL, and a refused insert would lose the attempt
and resend the same document forever; NUL and invalid UTF-8 are replaced.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"
_PERCENT = re.compile(r"%[0-9A-F]{2}")
# A shorter credential would redact ordinary text; no key, signature or token is that short.
MIN_CREDENTIAL_CHARS = 4


def storable_text(text: str) -> str:
    """`text` without what PostgreSQL's text refuses: NUL becomes U+FFFD, a lone surrogate "?"."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def storable_answer(body: bytes, *, credentials: Iterable[str], limit: int) -> str:
    """The first `limit` characters of an answer's body, decoded, redacted and storable."""
    return storable_text(redact_credentials(body.decode("utf-8", errors="replace"), credentials))[:limit]


def redact_credentials(text: str, credentials: Iterable[str]) -> str:
    """`text` with every spelling of each credential replaced by `REDACTED`.

    No spelling is shorter than the credential itself (escapes and Base64 only lengthen
    it), so a credential longer than `text` cannot be in it: the usual short answer and
    empty error skip working out the spellings (some 50 µs an attempt).
    """
    fitting = [credential for credential in credentials if len(credential) <= len(text)]
    forms = {form for credential in fitting for form in _spellings(credential)}
    for form in sorted(forms, key=len, reverse=True):  # the longest first: no piece of one is left
        text = text.replace(form, REDACTED)
    return text


def _spellings(credential: str) -> set[str]:
    if len(credential) < MIN_CREDENTIAL_CHARS:
        return set()
    spellings = {
        credential,
        quote_plus(credential, safe=""),
        quote(credential, safe=""),
        json.dumps(credential)[1:-1],
        json.dumps(credential)[1:-1].replace("/", "\\/"),
        base64.b64encode(credential.encode()).decode("ascii"),
        html.escape(credential),
    }
    # Percent-encoding may use either case of hex digits.
    spellings |= {_PERCENT.sub(lambda m: m.group().lower(), spelling) for spelling in spellings}
    return {spelling for spelling in spellings if len(spelling) >= MIN_CREDENTIAL_CHARS}
