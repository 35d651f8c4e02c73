"""Is a body a document of CONTRACT §1? The partner's strict reading of what aamdest sends.

`parse_document` returns the document or raises `DocumentError` naming the first
problem: keys present and in order, every value a JSON string (integers written as
strings where CONTRACT §1 says so), User_count matching Users, times in AAM's
'EEE MMM dd HH:mm:ss UTC yyyy' form on a real date, regions deduplicated ascending.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from typing import Any

import orjson

DOCUMENT_KEYS = ("ProcessTime", "User_DPID", "Client_ID", "AAM_Destination_Id", "User_count", "Users")
USER_KEYS = ("AAM_UUID", "DataPartner_UUID", "AAM_Regions", "Segments")
SEGMENT_KEYS = ("Segment_ID", "Status", "DateTime")
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
AAM_TIME = re.compile(r"(\w{3}) (\w{3}) (\d{2}) (\d{2}):(\d{2}):(\d{2}) UTC (\d{4})")
DIGITS = re.compile(r"[0-9]+")


class DocumentError(ValueError):
    """The body is not a document of CONTRACT §1; the message says where."""


def parse_document(body: bytes) -> dict[str, Any]:
    """Return the document in `body`, or raise DocumentError naming the first problem."""
    document = _parsed(body)
    _check_keys(document, DOCUMENT_KEYS, where="the document")
    for key in DOCUMENT_KEYS[:5]:
        _check_string(document[key], where=key, digits=key != "Client_ID" and key != "ProcessTime")
    _check_time(document["ProcessTime"], where="ProcessTime")
    users = document["Users"]
    if not isinstance(users, list):
        raise DocumentError("Users is not a list")
    if document["User_count"] != str(len(users)):
        raise DocumentError(f"User_count is {document['User_count']!r} but Users holds {len(users)}")
    for index, user in enumerate(users):
        if not _is_plain_user(user):
            _check_user(user, where=f"Users[{index}]")  # names the problem
    return document


def _is_plain_user(user: Any) -> bool:
    """Whether `_check_user` finds nothing wrong, without building its messages (10,000 users a document).

    Stricter than `_check_user` (exact types): whatever this does not accept goes through it.
    """
    if type(user) is not dict or tuple(user) != USER_KEYS:
        return False
    uuid, partner, regions, segments = user.values()
    if type(uuid) is not str or not uuid or type(partner) is not str or type(segments) is not list:
        return False
    if type(regions) is not list or not all(type(region) is str for region in regions):
        return False
    return _are_plain_regions(tuple(regions)) and all(
        type(segment) is dict and tuple(segment) == SEGMENT_KEYS and type(segment["Segment_ID"]) is str
        and segment["Status"] in ("0", "1") and type(segment["DateTime"]) is str
        and not _time_problem(segment["DateTime"])
        for segment in segments
    )


@functools.lru_cache(maxsize=4_096)
def _are_plain_regions(regions: tuple[str, ...]) -> bool:
    if not all(DIGITS.fullmatch(region) for region in regions):
        return False
    numbers = [int(region) for region in regions]
    return numbers == sorted(set(numbers))


def _parsed(body: bytes) -> dict[str, Any]:
    """The JSON in `body`, refusing an object that repeats a key.

    Fast path: when orjson writes back exactly `body`, no key was repeated (orjson keeps one of
    them, so the bytes would differ) and the reading is the same as json's. Any other body (spaces,
    repeated keys, what orjson refuses) takes json's strict reading, a Python call per object.
    """
    try:
        document = orjson.loads(body)
        if orjson.dumps(document) == body:
            return document
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):  # orjson writes 254 levels, reads 1024
        pass
    try:
        strict: dict[str, Any] = json.loads(body.decode("utf-8"), object_pairs_hook=_refuse_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DocumentError(f"the body is not UTF-8 JSON: {exc}") from None
    return strict


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise DocumentError(f"an object repeats a key: {keys}")
    return dict(pairs)


def _check_keys(value: Any, expected: tuple[str, ...], *, where: str) -> None:
    if not isinstance(value, dict):
        raise DocumentError(f"{where} is not an object")
    if tuple(value) != expected:
        raise DocumentError(f"{where} has keys {list(value)}, expected {list(expected)} in that order")


def _check_string(value: Any, *, where: str, digits: bool = False) -> None:
    if not isinstance(value, str):
        raise DocumentError(f"{where} is {json.dumps(value)}, not a JSON string")
    if digits and not DIGITS.fullmatch(value):
        raise DocumentError(f"{where} is {value!r}, not an integer written as a string")


def _check_time(value: str, *, where: str) -> None:
    problem = _time_problem(value)
    if problem:
        raise DocumentError(f"{where} is {value!r}, {problem}")


@functools.lru_cache(maxsize=4_096)
def _time_problem(value: str) -> str:
    """What is wrong with an AAM time ("" if nothing); cached: a batch repeats a few times a million times."""
    match = AAM_TIME.fullmatch(value)
    if not match or match[1] not in DAYS or match[2] not in MONTHS:
        return "not 'EEE MMM dd HH:mm:ss UTC yyyy'"
    try:
        moment = dt.datetime(int(match[7]), MONTHS.index(match[2]) + 1, int(match[3]),
                             int(match[4]), int(match[5]), int(match[6]))
    except ValueError:
        return "not a real date and time"
    if DAYS[moment.weekday()] != match[1]:
        return f"but that day is a {DAYS[moment.weekday()]}"
    return ""


def _check_user(user: Any, *, where: str) -> None:
    _check_keys(user, USER_KEYS, where=where)
    _check_string(user["AAM_UUID"], where=f"{where}.AAM_UUID")
    if not user["AAM_UUID"]:
        raise DocumentError(f"{where}.AAM_UUID is empty")
    _check_string(user["DataPartner_UUID"], where=f"{where}.DataPartner_UUID")
    regions = user["AAM_Regions"]
    if not isinstance(regions, list):
        raise DocumentError(f"{where}.AAM_Regions is not a list")
    for index, region in enumerate(regions):
        _check_string(region, where=f"{where}.AAM_Regions[{index}]", digits=True)
    numbers = [int(region) for region in regions]
    if numbers != sorted(set(numbers)):
        raise DocumentError(f"{where}.AAM_Regions {regions} is not deduplicated in ascending order")
    if not isinstance(user["Segments"], list):
        raise DocumentError(f"{where}.Segments is not a list")
    for index, segment in enumerate(user["Segments"]):
        _check_segment(segment, where=f"{where}.Segments[{index}]")


def _check_segment(segment: Any, *, where: str) -> None:
    _check_keys(segment, SEGMENT_KEYS, where=where)
    _check_string(segment["Segment_ID"], where=f"{where}.Segment_ID")
    if segment["Status"] not in ("0", "1"):
        raise DocumentError(f"{where}.Status is {json.dumps(segment['Status'])}, not \"0\" or \"1\"")
    _check_string(segment["DateTime"], where=f"{where}.DateTime")
    _check_time(segment["DateTime"], where=f"{where}.DateTime")
