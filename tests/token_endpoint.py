"""What a local OAuth 2.0 token endpoint answers, for the partner's `script` (tests.partner.Reply)."""

from __future__ import annotations

import json

from tests.local_partner import Reply


def token_reply(token: str = "tok-1", *, expires_in: object = 3600, delay_s: float = 0.0, **extra) -> Reply:
    answer = {"access_token": token, "token_type": "Bearer", **extra}
    if expires_in is not None:
        answer["expires_in"] = expires_in
    headers = (("Content-Type", "application/json"),)
    return Reply(body=json.dumps(answer).encode(), delay_s=delay_s, headers=headers)
