"""delivery.intake.bodies and .events: bodies decoded, events validated, all or nothing, no database."""

from __future__ import annotations

import datetime as dt
import gzip

import orjson
import pytest

from delivery.intake.bodies import MAX_BODY_BYTES, PayloadTooLarge, UnsupportedPayload, parse_events
from delivery.intake.events import Event, EventError, EventType, InvalidEvents, validate_event

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
UUID = "19393572368547369350319949416899715727"


def qualification(**changes) -> dict:
    return {"type": "qualification", "aam_uuid": UUID, "segment_id": 14356, **changes}


def parse_json(value: object, *, encoding: str = "") -> list[Event]:
    body = orjson.dumps(value)
    return parse_events(body=gzip.compress(body) if encoding else body, content_type="application/json",
                        content_encoding=encoding, now=NOW)


def parse_ndjson(text: bytes, *, encoding: str = "") -> list[Event]:
    return parse_events(body=gzip.compress(text) if encoding else text, content_type="application/x-ndjson",
                        content_encoding=encoding, now=NOW)


def first_problem(raw: object) -> tuple[str, str]:
    with pytest.raises(InvalidEvents) as caught:
        parse_json([raw])
    (error,) = caught.value.errors
    assert error.index == 0
    return error.field, error.message


# ---- the four types --------------------------------------------------------------------


def test_it_reads_the_four_event_types():
    events = parse_json([
        qualification(datetime="2016-07-27T16:17:22Z", regions=[9, 6, 9], onboarded=True),
        {"type": "disqualification", "aam_uuid": UUID, "segment_id": 12176},
        {"type": "id_sync", "aam_uuid": UUID, "dpid": 20914, "dpuuid": "4250948725049857"},
        {"type": "opt_out", "aam_uuid": UUID, "onboarded": False},
    ])

    assert events == [
        Event(type=EventType.QUALIFICATION, aam_uuid=UUID, segment_id=14356, regions=(6, 9), onboarded=True,
              datetime=dt.datetime(2016, 7, 27, 16, 17, 22, tzinfo=dt.UTC)),
        Event(type=EventType.DISQUALIFICATION, aam_uuid=UUID, segment_id=12176, datetime=NOW),
        Event(type=EventType.ID_SYNC, aam_uuid=UUID, dpid=20914, dpuuid="4250948725049857", datetime=NOW),
        Event(type=EventType.OPT_OUT, aam_uuid=UUID, datetime=NOW),
    ]


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2016-07-27T16:17:22", dt.datetime(2016, 7, 27, 16, 17, 22, tzinfo=dt.UTC)),
        ("2016-07-27T18:17:22.5+02:00", dt.datetime(2016, 7, 27, 16, 17, 22, 500_000, tzinfo=dt.UTC)),
        ("2016-07-27", dt.datetime(2016, 7, 27, tzinfo=dt.UTC)),
        ("2026-03-10T12:04:59Z", NOW + dt.timedelta(minutes=4, seconds=59)),
        (None, NOW),
    ],
)
def test_datetimes_are_iso_8601_in_utc_by_default(given, stored):
    (event,) = parse_json([qualification(datetime=given)])

    assert event.datetime == stored
    assert event.datetime.tzinfo == dt.UTC


def test_null_optional_fields_take_their_defaults():
    (event,) = parse_json([qualification(regions=None, onboarded=None)])

    assert (event.regions, event.onboarded) == ((), False)


# ---- one problem per event --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field", "says"),
    [
        ("qualification", "event", "JSON object"),
        ({"aam_uuid": UUID}, "type", "required"),
        (qualification(type="segment_enter"), "type", "Unknown event type 'segment_enter'"),
        (qualification(type=7), "type", "Unknown event type"),
        (qualification(dpid=20914), "dpid", "Unknown field"),
        ({"type": "opt_out", "aam_uuid": UUID, "segment_id": 1}, "segment_id", "Unknown field"),
        ({"type": "disqualification", "aam_uuid": UUID, "segment_id": 1, "regions": [9]}, "regions",
         "Unknown field"),
        ({"type": "qualification", "segment_id": 1}, "aam_uuid", "required"),
        ({"type": "qualification", "aam_uuid": UUID}, "segment_id", "required"),
        ({"type": "id_sync", "aam_uuid": UUID, "dpuuid": "x"}, "dpid", "required"),
        ({"type": "id_sync", "aam_uuid": UUID, "dpid": 1}, "dpuuid", "required"),
        (qualification(aam_uuid=None), "aam_uuid", "required"),
        (qualification(aam_uuid=""), "aam_uuid", "non-empty string"),
        (qualification(aam_uuid=123), "aam_uuid", "non-empty string"),
        (qualification(aam_uuid="x" * 101), "aam_uuid", "longer than 100"),
        (qualification(aam_uuid="a b"), "aam_uuid", "whitespace"),
        (qualification(aam_uuid="a/b"), "aam_uuid", "'/'"),
        (qualification(aam_uuid="a\u0000b"), "aam_uuid", "control"),
        (qualification(segment_id=True), "segment_id", "positive integer"),
        (qualification(segment_id=0), "segment_id", "positive integer"),
        (qualification(segment_id=-3), "segment_id", "positive integer"),
        (qualification(segment_id="14356"), "segment_id", "positive integer"),
        (qualification(segment_id=1.5), "segment_id", "positive integer"),
        (qualification(segment_id=2**63), "segment_id", "positive integer"),
        ({"type": "id_sync", "aam_uuid": UUID, "dpid": False, "dpuuid": "x"}, "dpid", "positive integer"),
        ({"type": "id_sync", "aam_uuid": UUID, "dpid": 1, "dpuuid": "  "}, "dpuuid", "non-empty"),
        ({"type": "id_sync", "aam_uuid": UUID, "dpid": 1, "dpuuid": "x" * 256}, "dpuuid", "longer than 255"),
        ({"type": "id_sync", "aam_uuid": UUID, "dpid": 1, "dpuuid": "a\nb"}, "dpuuid", "control"),
        (qualification(regions=9), "regions", "list of positive integers"),
        (qualification(regions=[9, "6"]), "regions", "list of positive integers"),
        (qualification(regions=[True]), "regions", "list of positive integers"),
        (qualification(regions=[0]), "regions", "list of positive integers"),
        (qualification(onboarded="yes"), "onboarded", "true or false"),
        (qualification(onboarded=1), "onboarded", "true or false"),
        (qualification(datetime="yesterday"), "datetime", "ISO 8601"),
        (qualification(datetime=1469636242), "datetime", "ISO 8601"),
        (qualification(datetime="2026-03-10T12:05:01Z"), "datetime", "5 minutes in the future"),
        (qualification(datetime="2026-03-10T13:05:01+01:00"), "datetime", "5 minutes in the future"),
        (qualification(datetime="1969-12-31T23:59:59Z"), "datetime", "1970"),
        (qualification(datetime="0001-01-01T00:00:00+01:00"), "datetime", "ISO 8601"),
    ],
)
def test_an_invalid_event_is_reported_with_its_field(raw, field, says):
    reported_field, message = first_problem(raw)

    assert reported_field == field
    assert says in message


def test_only_the_first_problem_of_an_event_is_reported_in_a_fixed_order():
    raw = {"type": "qualification", "zeta": 1, "alpha": 2, "segment_id": "x"}

    assert first_problem(raw)[0] == "alpha"
    assert first_problem({"type": "qualification", "aam_uuid": "", "segment_id": True})[0] == "aam_uuid"


def test_every_bad_event_is_reported_and_none_is_returned():
    with pytest.raises(InvalidEvents) as caught:
        parse_json([qualification(), qualification(segment_id=0), qualification(), {"type": "nope"}])

    assert [(error.index, error.field) for error in caught.value.errors] == [(1, "segment_id"), (3, "type")]


def test_validate_event_reads_a_single_event():
    event = validate_event({"type": "opt_out", "aam_uuid": UUID, "datetime": "2026-03-10T11:00:00Z"}, now=NOW)

    assert event == Event(type=EventType.OPT_OUT, aam_uuid=UUID, datetime=NOW - dt.timedelta(hours=1))


# ---- bodies -----------------------------------------------------------------------------


def test_ndjson_skips_blank_lines_and_counts_only_the_others():
    body = b'\n{"type":"opt_out","aam_uuid":"a"}\r\n\n  \n{"type":"opt_out","aam_uuid":"b"}\n{"type":"x"}\n'

    with pytest.raises(InvalidEvents) as caught:
        parse_ndjson(body)

    assert caught.value.errors == [EventError(2, "type", caught.value.errors[0].message)]
    assert [event.aam_uuid for event in parse_ndjson(body.replace(b'{"type":"x"}', b""))] == ["a", "b"]


def test_an_ndjson_line_that_is_not_json_is_reported_at_its_index():
    body = b'{"type":"opt_out","aam_uuid":"a"}\n{"type":\n[1]\n{"type":"opt_out"}\n'

    with pytest.raises(InvalidEvents) as caught:
        parse_ndjson(body)

    assert [(error.index, error.field) for error in caught.value.errors] == [
        (1, "event"), (2, "event"), (3, "aam_uuid")
    ]
    assert "not valid JSON" in caught.value.errors[0].message


@pytest.mark.parametrize(
    ("body", "says"),
    [(b'[{"type": "opt_out"', "not valid JSON"), (b"", "not valid JSON"),
     (b'{"type": "opt_out", "aam_uuid": "a"}', "JSON array"), (b"\xff\xfe[]", "not valid JSON")],
)
def test_a_body_that_cannot_be_read_is_one_error_without_an_index(body, says):
    with pytest.raises(InvalidEvents) as caught:
        parse_events(body=body, content_type="application/json; charset=utf-8", content_encoding="", now=NOW)

    (error,) = caught.value.errors
    assert (error.index, error.field) == (None, "body")
    assert says in error.message


def test_gzip_bodies_are_decompressed_in_either_format():
    events = [qualification(), {"type": "opt_out", "aam_uuid": "b"}]
    ndjson = b"\n".join(orjson.dumps(event) for event in events)

    assert len(parse_json(events, encoding="gzip")) == 2
    assert len(parse_ndjson(ndjson, encoding="gzip")) == 2
    # Concatenated gzip members decompress as one stream, as with gzip(1).
    body = gzip.compress(ndjson[:40]) + gzip.compress(ndjson[40:])
    assert len(parse_events(body=body, content_type="application/x-ndjson", content_encoding="x-gzip",
                            now=NOW)) == 2


@pytest.mark.parametrize("body", [b"not gzip at all", gzip.compress(b"[]")[:-6]])
def test_broken_gzip_is_a_body_error(body):
    with pytest.raises(InvalidEvents) as caught:
        parse_events(body=body, content_type="application/json", content_encoding="gzip", now=NOW)

    assert caught.value.errors[0].field == "body"
    assert "gzip" in caught.value.errors[0].message


def test_a_gzip_bomb_stops_at_the_size_limit():
    bomb = gzip.compress(b"[" + b" " * MAX_BODY_BYTES + b"]", compresslevel=1)

    with pytest.raises(PayloadTooLarge, match="decompressed body is larger"):
        parse_events(body=bomb, content_type="application/json", content_encoding="gzip", now=NOW)


def test_more_than_ten_thousand_events_is_too_large_in_either_format():
    events = [{"type": "opt_out", "aam_uuid": "a"}] * 10_001

    with pytest.raises(PayloadTooLarge, match="10001 events"):
        parse_json(events)
    with pytest.raises(PayloadTooLarge):
        parse_ndjson(b"\n".join(orjson.dumps(event) for event in events))
    assert len(parse_json(events[:10_000])) == 10_000


@pytest.mark.parametrize(
    ("content_type", "encoding"),
    [("text/plain", ""), ("application/x-www-form-urlencoded", ""), ("application/json", "br"),
     ("application/json", "deflate")],
)
def test_other_content_types_and_encodings_are_unsupported(content_type, encoding):
    with pytest.raises(UnsupportedPayload):
        parse_events(body=b"[]", content_type=content_type, content_encoding=encoding, now=NOW)


def test_an_empty_array_holds_no_events():
    assert parse_events(body=b"[]", content_type="", content_encoding="identity", now=NOW) == []
