"""A logging filter that masks credentials before any handler writes a record (CONTRACT §3).

aamdest's own code never logs a secret; this filter is the second line of
defence, for a library, a traceback or a future log line that would. Installed
on every handler in `settings.LOGGING`, it masks in the message (formatted with
its arguments), in every `extra=` value (strings, and dicts, lists and tuples
walked), in the exception text and in the stack text:

- the value of an `Authorization` / `Proxy-Authorization` header, and of any
  header whose name contains `signature` (`X-Signature`, `X-Signature-New`, …),
  in `Name: value`, `'Name': 'value'`, `"Name": "value"` or `name=value` form;
- the credentials after `Bearer` or `Basic`, wherever they appear;
- the values of fields (and `extra=` names) `access_token`, `refresh_token`, `id_token`,
  `client_secret`, `oauth_client_secret`, `signing_key`, `new_signing_key`,
  `password` or `secret` (form bodies, JSON, reprs).

A masked value reads `[redacted]`. Objects other than strings and containers
are left as they are: handlers such as Django's mail handler need them intact.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

MASK = "[redacted]"

_SENSITIVE_NAMES = (
    r"(?:proxy-)?authorization|[\w-]*signature[\w-]*|access_token|refresh_token|id_token"
    r"|(?:oauth_)?client_secret|(?:new_)?signing_key|password|secret"
)
# A name, optionally quoted, then ':' or '=', then a quoted or a bare value.
# A bare value may start with an auth scheme ("Bearer x"), which is masked with it.
_KEY_VALUE = re.compile(
    rf"""(?P<key>(?<![\w-])["']?(?:{_SENSITIVE_NAMES})["']?\s*[:=]\s*)"""
    r"""(?:"(?P<double>(?:[^"\\]|\\.)*)"|'(?P<single>(?:[^'\\]|\\.)*)'"""
    r"""|(?P<bare>\[redacted\]|(?:[A-Za-z][\w-]*[ \t]+(?=[^\s,;&]))?[^\s,;&'"}\]]+))""",
    re.IGNORECASE,
)
_SCHEME_CREDENTIALS = re.compile(r"\b(?P<scheme>Bearer|Basic)[ \t]+[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE)
_SENSITIVE_KEY = re.compile(rf"(?:{_SENSITIVE_NAMES})", re.IGNORECASE)
_MAX_DEPTH = 5

# Attributes every LogRecord has: anything else came from `extra=`.
_STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def redact(text: str) -> str:
    """Return `text` with credentials masked (see the module docstring)."""
    # Names first, so that "Authorization: Bearer x" loses its scheme too.
    text = _KEY_VALUE.sub(_mask_value, text)
    return _SCHEME_CREDENTIALS.sub(lambda m: f"{m['scheme']} {MASK}", text)


def _mask_value(match: re.Match[str]) -> str:
    if match["double"] is not None:
        return f'{match["key"]}"{MASK}"'
    if match["single"] is not None:
        return f"{match['key']}'{MASK}'"
    return f"{match['key']}{MASK}"


def redact_value(value: Any, *, depth: int = 0) -> Any:
    """Mask credentials in a string, or in the strings and sensitive keys of dicts, lists and tuples."""
    if isinstance(value, str):
        return redact(value)
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {key: _redact_item(key, item, depth=depth) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(item, depth=depth + 1) for item in value)
    return value


def _redact_item(key: Any, item: Any, *, depth: int) -> Any:
    if isinstance(key, str) and _SENSITIVE_KEY.fullmatch(key):
        return MASK
    return redact_value(item, depth=depth + 1)


class RedactSecrets(logging.Filter):
    """Masks credentials in each record in place; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        self._redact_message(record)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                setattr(record, key, _redact_item(key, value, depth=-1))
        if record.exc_info and record.exc_info[0] is not None:
            # Formatters reuse exc_text when it is set, so they print the masked one.
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True

    @staticmethod
    def _redact_message(record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the handler's to report
            return
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None


def install_on_handlers(*, logger: logging.Logger) -> None:
    """Add the filter to each handler of `logger` that lacks it.

    Celery's worker and beat replace the root logger's handlers with their own
    (and give the task logger its own): they are called on its
    `after_setup_logger` / `after_setup_task_logger` signals (aamdest.celery).
    """
    for handler in logger.handlers:
        if not any(isinstance(existing, RedactSecrets) for existing in handler.filters):
            handler.addFilter(RedactSecrets())
