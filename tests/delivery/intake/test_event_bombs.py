"""Event bodies that would explode in memory are refused early (413), whatever their compression.

`[[],[],…]` is 3 bytes per JSON value: 64 MiB of it (about 60 KB of gzip) once made the web process
build over a gigabyte of Python lists before the 10,000-event limit was checked.
"""

from __future__ import annotations

import datetime as dt
import gzip
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from delivery.intake import bodies
from delivery.intake.bodies import PayloadTooLarge, parse_events

ROOT = Path(__file__).resolve().parents[3]
NOW = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)
ELEMENTS = 20_000_000  # 60 MB of "[],", under the 64 MiB body limit


def empty_lists(count: int) -> bytes:
    return b"[" + b"[]," * (count - 1) + b"[]]"


def parse(body: bytes, *, content_type: str = "application/json", encoding: str = "gzip"):
    return parse_events(body=body, content_type=content_type, content_encoding=encoding, now=NOW)


def test_a_gzip_bomb_of_empty_lists_is_refused_as_too_large():
    body = gzip.compress(empty_lists(ELEMENTS))
    assert len(body) < 150_000

    with pytest.raises(PayloadTooLarge, match="at most 10000 events are accepted"):
        parse(body)


def test_millions_of_blank_ndjson_lines_then_too_many_events_are_refused():
    line = orjson.dumps({"type": "opt_out", "aam_uuid": "d"})
    body = gzip.compress(b"\n" * 30_000_000 + (line + b"\n") * 10_001)

    with pytest.raises(PayloadTooLarge, match="More than 10000 events"):
        parse(body, content_type="application/x-ndjson")


def test_blank_ndjson_lines_alone_are_no_events():
    assert parse(gzip.compress(b"\n \n\t\n" * 1_000_000), content_type="application/x-ndjson") == []


@pytest.mark.parametrize("body", [b"[1,]", b"[1 2]", b"[{}] x", b"[NaN]", b"[", b"[{}"])
def test_the_counting_parser_refuses_what_the_usual_one_refuses(monkeypatch, body):
    monkeypatch.setattr(bodies, "SUSPICIOUS_COMMAS", -1)

    with pytest.raises(bodies.InvalidEvents) as refused:
        parse(body, encoding="identity")

    assert refused.value.errors[0].field == "body"


def test_the_counting_parser_reads_real_events_as_the_usual_one_does(monkeypatch):
    events = [{"type": "qualification", "aam_uuid": f"d{i}", "segment_id": 7, "regions": [6, 9],
               "datetime": "2024-03-01T11:00:00"} for i in range(50)]
    body = orjson.dumps(events)
    usual = parse(body, encoding="identity")
    monkeypatch.setattr(bodies, "SUSPICIOUS_COMMAS", -1)

    assert parse(b" \n" + body + b"\n ", encoding="identity") == usual


MEASURE = """
import datetime as dt, resource, sys, zlib
import django, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aamdest.settings")
django.setup()
from delivery.intake.bodies import IngestionError, parse_events
packer = zlib.compressobj(wbits=31)  # gzip, built in chunks so that the test itself stays small
chunks = (packer.compress(b"[]," * 1_000_000) for _ in range(COUNT // 1_000_000))
body = packer.compress(b"[") + b"".join(chunks)
body += packer.compress(b"[]]") + packer.flush()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    parse_events(body=body, content_type="application/json", content_encoding="gzip",
                 now=dt.datetime.now(dt.UTC))
except IngestionError as error:
    print(type(error).__name__, file=sys.stderr)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(body) // 1024, before // 1024, after // 1024)
"""


def test_refusing_the_bomb_costs_the_web_process_little_memory():
    # Peak RSS (a high-water mark) before and after refusing it, in a fresh process.
    script = MEASURE.replace("COUNT", str(ELEMENTS))
    environment = {"DJANGO_DEBUG": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env=environment)

    assert "PayloadTooLarge" in result.stderr, result.stderr
    body_kib, before_mib, after_mib = map(int, result.stdout.split()[-3:])
    print(f"{ELEMENTS:,} empty lists in {body_kib} KiB of gzip: peak RSS {before_mib} -> {after_mib} MiB")
    assert after_mib - before_mib < 300


@pytest.mark.parametrize(
    "wrapped",
    [b"[" + empty_lists(1_000_000) + b"]", b'{"a": ' + empty_lists(1_000_000) + b"}"],
    ids=["array in an array", "array in an object"],
)
@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_wrapped_bombs_are_refused_before_decoding(wrapped, content_type):
    with pytest.raises(PayloadTooLarge, match="JSON arrays and objects"):
        parse(gzip.compress(wrapped), content_type=content_type)


def test_a_body_nested_past_the_decoders_depth_is_a_400_not_a_500(monkeypatch):
    monkeypatch.setattr(bodies, "SUSPICIOUS_COMMAS", -1)  # the element-by-element decoder

    with pytest.raises(bodies.InvalidEvents) as refused:
        parse(b"[" + b"[" * 100_000 + b"]" * 100_001, encoding="identity")

    assert refused.value.errors[0].field == "body"
