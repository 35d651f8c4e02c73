"""The partner refuses, with 400, a body that is not a document of CONTRACT §1 (`partner.documents`)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from partner.documents import DocumentError, parse_document
from tests.partner.receiving import BODY, DOCUMENT, JSON


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict], None]:
    def mutate(document: dict) -> None:
        target = document
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


def _reorder(document: dict) -> None:
    users = document.pop("Users")
    document["Users"] = users
    document["User_count"] = document.pop("User_count")


def _drop_destination_id(document: dict) -> None:
    document["AAM_Destination_Id_"] = document.pop("AAM_Destination_Id")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_drop_destination_id, "expected"),
        (_reorder, "in that order"),
        (_set(("User_DPID",), 20914), "not a JSON string"),
        (_set(("User_count",), "3"), "User_count"),
        (_set(("Users", 0, "Segments", 0, "Status"), 1), "Status"),
        (_set(("Users", 0, "Segments", 0, "Status"), "2"), "Status"),
        (_set(("Users", 1, "AAM_Regions"), ["9", "6"]), "ascending"),
        (_set(("Users", 1, "AAM_Regions"), [6]), "not a JSON string"),
        (_set(("ProcessTime",), "2016-07-27T16:17:42Z"), "EEE MMM dd"),
        (_set(("ProcessTime",), "Thu Jul 27 16:17:42 UTC 2016"), "Wed"),
        (_set(("Users", 0, "Segments", 1, "DateTime"), "Wed Jul 27 16:17:22 GMT 2016"), "DateTime"),
        (_set(("Users", 0, "AAM_UUID"), ""), "empty"),
    ],
)
def test_it_refuses_a_document_that_strays_from_spec_section_1_with_400(start_receiver, mutate, message):
    receiver = start_receiver()
    document = copy.deepcopy(DOCUMENT)
    mutate(document)

    response = receiver.post(json.dumps(document).encode())

    assert response.status_code == 400
    assert message in response.json()["error"]


def test_it_refuses_a_body_that_is_not_labelled_json_with_400(start_receiver):
    receiver = start_receiver()

    response = receiver.post(headers={"Content-Type": "text/plain"})

    assert response.status_code == 400


def test_it_refuses_an_object_with_a_repeated_key_with_400(start_receiver):
    receiver = start_receiver()
    body = BODY.replace(b'"Client_ID": "74323"', b'"Client_ID": "74323", "Client_ID": "1"')

    assert receiver.post(body).status_code == 400


def test_a_body_signed_right_but_not_a_document_is_refused_with_400_not_403(start_receiver):
    # The CONTRACT §3 test vector: HMAC-SHA1 of "POST message content".
    receiver = start_receiver("--signing-key", "sample_partner_private_key", "--algorithm", "sha1")

    signed = {**JSON, "X-Signature": "+wFdR/afZNoVqtGl8/e1KJ4ykPU="}

    response = receiver.post(b"POST message content", headers=signed)

    assert response.status_code == 400
    assert "not UTF-8 JSON" in response.json()["error"]


def test_it_reads_a_valid_document_back_as_it_was_sent():
    assert parse_document(BODY) == DOCUMENT


def test_it_names_the_first_problem_of_a_document_it_refuses():
    with pytest.raises(DocumentError, match=r"Users\[1\]\.AAM_Regions"):
        parse_document(BODY.replace(b'["6", "9"]', b'["9", "6"]'))


def test_a_compact_body_is_read_the_same_and_a_repeated_key_in_it_is_still_refused():
    # aamdest's own bodies are compact orjson: the receiver's fast path reads them
    compact = orjson.dumps(DOCUMENT)

    assert parse_document(compact) == DOCUMENT
    with pytest.raises(DocumentError, match="repeats a key"):
        parse_document(compact.replace(b'"Client_ID":"74323"', b'"Client_ID":"74323","Client_ID":"1"'))


def test_a_body_orjson_reads_but_cannot_write_back_gets_the_strict_reading():
    # orjson reads 1024 levels of nesting but writes 254: the strict reading names the problem
    nested = b"[" * 300 + b"]" * 300
    deep = orjson.dumps(DOCUMENT).replace(b'"Segment_ID":"', b'"Segment_ID":' + nested + b',"x":"', 1)

    with pytest.raises(DocumentError):
        parse_document(deep)
