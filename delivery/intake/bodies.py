"""Request bodies in: decode them into events, all or nothing (SPEC §5).

No HTTP and no database here: the view hands over the body's bytes and two
headers, and gets back a list of `Event` or an `IngestionError` that says what
to answer. Each event is checked by `delivery.intake.events.validate_events`.

Body formats:
- a JSON array of event objects (`Content-Type: application/json`, or none);
- NDJSON, one event object per line (`Content-Type: application/x-ndjson`);
  blank lines are skipped and do not count as events;
- either one gzip-compressed (`Content-Encoding: gzip`).

Answers, decided here and mapped to statuses by the view:
- `PayloadTooLarge` (413): a body over `MAX_BODY_BYTES`, compressed or once
  decompressed (a gzip bomb stops there), or more than `MAX_EVENTS` events.
- `UnsupportedPayload` (415): another content type or content encoding.
- `InvalidEvents` (400): a list of `EventError(index, field, message)`, one per
  bad event (its first problem), `index` 0-based (NDJSON: non-blank lines).
  An NDJSON line that is not JSON is reported at its index with field `event`,
  like a line holding something other than an object. A body that cannot be
  read at all (broken JSON, not an array, bad gzip) is one error with
  `index` null and field `body`.
"""

from __future__ import annotations

import datetime as dt
import zlib

import orjson

from delivery.intake.events import Event, EventError, IngestionError, InvalidEvents, validate_events

MAX_EVENTS = 10_000
MAX_BODY_BYTES = 64 * 1024 * 1024

JSON_CONTENT_TYPES = frozenset({"", "application/json"})
NDJSON_CONTENT_TYPES = frozenset({"application/x-ndjson"})
GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})
IDENTITY_ENCODINGS = frozenset({"", "identity"})


class PayloadTooLarge(IngestionError):
    status = 413


class UnsupportedPayload(IngestionError):
    status = 415


def parse_events(*, body: bytes, content_type: str, content_encoding: str, now: dt.datetime) -> list[Event]:
    """Decode and validate a request body; raise `IngestionError` unless every event is valid."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in JSON_CONTENT_TYPES | NDJSON_CONTENT_TYPES:
        raise UnsupportedPayload(
            f"Content-Type {media_type!r} is not supported: send a JSON array as application/json "
            "or one event per line as application/x-ndjson."
        )
    data = decode_body(body=body, content_encoding=content_encoding)
    if media_type in NDJSON_CONTENT_TYPES:
        return _parse_ndjson(data, now=now)
    return _parse_json_array(data, now=now)


def decode_body(*, body: bytes, content_encoding: str) -> bytes:
    """Undo `Content-Encoding`, refusing more than `MAX_BODY_BYTES` of output."""
    encoding = content_encoding.strip().lower()
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"The body is larger than {MAX_BODY_BYTES} bytes.")
    if encoding in IDENTITY_ENCODINGS:
        return body
    if encoding in GZIP_ENCODINGS:
        return _gunzip(body)
    raise UnsupportedPayload(f"Content-Encoding {encoding!r} is not supported: use gzip or none.")


def _gunzip(body: bytes) -> bytes:
    # Decompress in bounded steps so that a small bomb never allocates more
    # than the limit; concatenated gzip members are allowed, as gzip(1) does.
    output = bytearray()
    remaining = body
    try:
        while remaining:
            decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            output += decompressor.decompress(remaining, MAX_BODY_BYTES + 1 - len(output))
            if len(output) > MAX_BODY_BYTES or decompressor.unconsumed_tail:
                raise PayloadTooLarge(f"The decompressed body is larger than {MAX_BODY_BYTES} bytes.")
            if not decompressor.eof:
                raise zlib.error("truncated data")
            remaining = decompressor.unused_data
    except zlib.error as exc:
        raise InvalidEvents([EventError(None, "body", f"The body is not valid gzip data ({exc}).")]) from None
    return bytes(output)


def _parse_json_array(data: bytes, *, now: dt.datetime) -> list[Event]:
    try:
        raws = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvents([EventError(None, "body", f"The body is not valid JSON: {exc}.")]) from None
    if not isinstance(raws, list):
        raise InvalidEvents(
            [EventError(None, "body", "The body must be a JSON array of events (or NDJSON lines "
                                      "with Content-Type: application/x-ndjson).")]
        )
    _check_count(len(raws))
    return validate_events(raws, now=now)


def _parse_ndjson(data: bytes, *, now: dt.datetime) -> list[Event]:
    lines = [line for line in data.split(b"\n") if line.strip()]
    _check_count(len(lines))
    raws: list[object] = []
    errors: list[EventError] = []
    for index, line in enumerate(lines):
        try:
            raws.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            errors.append(EventError(index, "event", f"This line is not valid JSON: {exc}."))
            raws.append(None)
    return validate_events(raws, now=now, known_errors=errors)


def _check_count(count: int) -> None:
    if count > MAX_EVENTS:
        raise PayloadTooLarge(f"{count} events in one request; at most {MAX_EVENTS} are accepted.")
