"""Request bodies in: decode them into events, all or nothing (CONTRACT §5).

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
import json
import re
import zlib
from collections.abc import Iterator

import orjson

from delivery.intake.events import Event, EventError, IngestionError, InvalidEvents, validate_events

MAX_EVENTS = 10_000
MAX_BODY_BYTES = 64 * 1024 * 1024
# A JSON body with more commas than this may hold millions of tiny values (`[[],[],…]` decodes
# 100 KB of gzip into over a gigabyte of lists): its events are then counted one at a time,
# refusing the 10,001st before the rest is built. Real events hold well under 64 commas each.
SUSPICIOUS_COMMAS = 64 * MAX_EVENTS
# Every JSON array or object costs the decoder a Python object, wrapped ones too (`[[[],[],…]]`,
# `{"a": [[],…]}`, one NDJSON line of them): past this many the body is refused before decoding.
MAX_STRUCTURES = 64 * MAX_EVENTS
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_LINE = re.compile(rb"[^\n]+")

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
    if data.count(b"[") + data.count(b"{") > MAX_STRUCTURES:
        raise PayloadTooLarge(
            f"The body holds more than {MAX_STRUCTURES} JSON arrays and objects; "
            f"at most {MAX_EVENTS} events are accepted."
        )
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
        raws = _load_counting(data) if data.count(b",") > SUSPICIOUS_COMMAS else orjson.loads(data)
    except (orjson.JSONDecodeError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidEvents([EventError(None, "body", f"The body is not valid JSON: {exc}.")]) from None
    if not isinstance(raws, list):
        raise InvalidEvents([EventError(None, "body", _NOT_AN_ARRAY)])
    _check_count(len(raws))
    return validate_events(raws, now=now)


_NOT_AN_ARRAY = (
    "The body must be a JSON array of events (or NDJSON lines with Content-Type: application/x-ndjson)."
)


def _load_counting(data: bytes) -> object:
    """Decode a JSON array element by element, refusing more than `MAX_EVENTS` as soon as it sees one."""
    text = data.decode("utf-8")
    position = _skip_whitespace(text, 0)
    if not text.startswith("[", position):
        return orjson.loads(data)  # not an array: the usual error (or value) from the usual parser
    decoder = json.JSONDecoder(parse_constant=_refuse_constant)
    items: list[object] = []
    position = _skip_whitespace(text, position + 1)
    while not (not items and text.startswith("]", position)):
        item, position = decoder.raw_decode(text, position)
        items.append(item)
        _check_count(len(items), at_least=True)
        position = _skip_whitespace(text, position)
        if text.startswith("]", position):
            break
        if not text.startswith(",", position):
            raise json.JSONDecodeError("expected ',' or ']'", text, position)
        position = _skip_whitespace(text, position + 1)
    if text[position + 1:].strip(" \t\n\r"):
        raise json.JSONDecodeError("unexpected content after the array", text, position + 1)
    return items


def _skip_whitespace(text: str, position: int) -> int:
    match = _WHITESPACE.match(text, position)
    return match.end() if match else position


def _refuse_constant(name: str) -> object:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def _parse_ndjson(data: bytes, *, now: dt.datetime) -> list[Event]:
    raws: list[object] = []
    errors: list[EventError] = []
    for index, line in enumerate(_non_blank_lines(data)):
        _check_count(index + 1, at_least=True)
        try:
            raws.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            errors.append(EventError(index, "event", f"This line is not valid JSON: {exc}."))
            raws.append(None)
    return validate_events(raws, now=now, known_errors=errors)


def _non_blank_lines(data: bytes) -> Iterator[bytes]:
    # One line at a time, never a list of them all: a body of millions of newlines stays small.
    for match in _LINE.finditer(data):
        if not match.group().isspace():
            yield match.group()


def _check_count(count: int, *, at_least: bool = False) -> None:
    if count > MAX_EVENTS:
        counted = f"More than {MAX_EVENTS}" if at_least else str(count)
        raise PayloadTooLarge(f"{counted} events in one request; at most {MAX_EVENTS} are accepted.")
