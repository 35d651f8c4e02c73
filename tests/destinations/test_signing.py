"""HMAC signing and key rotation (CONTRACT §3)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from destinations.models import Destination
from destinations.signing import (
    RotationConflict,
    RotationRefused,
    finish_key_rotation,
    sign_body,
    signature_headers,
    start_key_rotation,
)
from tests.factories import DestinationFactory

SPEC_KEY = "sample_partner_private_key"
SPEC_BODY = b"POST message content"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("sha1", "+wFdR/afZNoVqtGl8/e1KJ4ykPU="),
        ("sha256", "WJzevEtYmeOolVtcXGrcA3KKiTQMTZUfKzCw/ZNz9YU="),
        # Computed independently with `openssl dgst -md5 -hmac`.
        ("md5", "BwA1u1xkb9MNnDgRkyLwlQ=="),
    ],
)
def test_it_signs_the_spec_test_vector(algorithm, expected):
    assert sign_body(body=SPEC_BODY, key=SPEC_KEY, algorithm=algorithm) == expected


def test_it_keys_the_hmac_with_the_utf8_bytes_of_the_key():
    # `printf '{"Users":[]}' | openssl dgst -sha256 -hmac 'clé' -binary | base64`
    expected = "oEuHPlUMRTxxIqKAiryARH16Zy1skk6Fos9VCoq2WJo="

    assert sign_body(body=b'{"Users":[]}', key="clé", algorithm="sha256") == expected


def test_it_refuses_an_unknown_algorithm_by_name():
    with pytest.raises(ValueError, match="unknown signing algorithm 'sha512'"):
        sign_body(body=SPEC_BODY, key=SPEC_KEY, algorithm="sha512")


def test_it_refuses_to_sign_with_an_empty_key():
    with pytest.raises(ValueError, match="empty key"):
        sign_body(body=SPEC_BODY, key="", algorithm="sha256")


def test_it_adds_no_header_when_the_destination_does_not_sign():
    destination = Destination(auth_mode="none", signing_key=SPEC_KEY)

    assert signature_headers(destination=destination, body=SPEC_BODY) == {}


def test_it_signs_in_the_header_the_partner_names_with_its_algorithm():
    destination = Destination(
        auth_mode="hmac", signing_key=SPEC_KEY, signing_algorithm="sha1", signing_header="X-AAM-Sig"
    )

    assert signature_headers(destination=destination, body=SPEC_BODY) == {
        "X-AAM-Sig": "+wFdR/afZNoVqtGl8/e1KJ4ykPU="
    }


@pytest.mark.django_db
def test_a_rotation_sends_both_signatures_then_only_the_new_one():
    # Given an HMAC destination signing with the SPEC key
    destination = DestinationFactory(auth_mode="hmac", signing_key="old-key", signing_header="X-Signature")

    # When a rotation starts
    start_key_rotation(destination=destination, new_key=SPEC_KEY)

    # Then the old key's signature stays in place and the new one is added
    during = signature_headers(destination=Destination.objects.get(pk=destination.pk), body=SPEC_BODY)
    assert during == {
        "X-Signature": sign_body(body=SPEC_BODY, key="old-key", algorithm="sha256"),
        "X-Signature-New": "WJzevEtYmeOolVtcXGrcA3KKiTQMTZUfKzCw/ZNz9YU=",
    }

    # When it finishes
    finish_key_rotation(destination=destination)

    # Then only the new key signs, in the usual header
    after = signature_headers(destination=Destination.objects.get(pk=destination.pk), body=SPEC_BODY)
    assert after == {"X-Signature": "WJzevEtYmeOolVtcXGrcA3KKiTQMTZUfKzCw/ZNz9YU="}


@pytest.mark.django_db
def test_it_records_the_rotation_state_on_the_row_and_the_instance():
    destination = DestinationFactory(auth_mode="hmac", signing_key="old-key")

    start_key_rotation(destination=destination, new_key="new-key")

    stored = Destination.objects.get(pk=destination.pk)
    assert (stored.signing_key, stored.new_signing_key) == ("old-key", "new-key")
    assert stored.key_rotation_started_at is not None
    assert destination.key_rotation_started_at == stored.key_rotation_started_at

    finish_key_rotation(destination=destination)

    stored = Destination.objects.get(pk=destination.pk)
    assert (stored.signing_key, stored.new_signing_key) == ("new-key", "")
    assert stored.key_rotation_started_at is None
    assert (destination.signing_key, destination.new_signing_key) == ("new-key", "")


@pytest.mark.django_db
def test_it_saves_only_the_rotation_fields():
    # Given a stale in-memory copy whose other fields differ from the row
    destination = DestinationFactory(auth_mode="hmac", signing_key="old-key", name="original")
    destination.name = "changed in memory only"

    start_key_rotation(destination=destination, new_key="new-key")

    assert Destination.objects.get(pk=destination.pk).name == "original"


@pytest.mark.django_db
@pytest.mark.parametrize("auth_mode", ["none", "oauth2"])
def test_it_refuses_to_rotate_a_destination_that_does_not_sign(auth_mode):
    destination = DestinationFactory(auth_mode=auth_mode)

    with pytest.raises(RotationRefused, match="needs auth_mode 'hmac'"):
        start_key_rotation(destination=destination, new_key="new-key")
    with pytest.raises(RotationRefused, match="needs auth_mode 'hmac'"):
        finish_key_rotation(destination=destination)


@pytest.mark.django_db
@pytest.mark.parametrize(("new_key", "message"), [("", "must not be empty"), ("  ", "must not be empty"),
                                                  ("old-key", "already in use")])
def test_it_refuses_an_empty_or_unchanged_key(new_key, message):
    destination = DestinationFactory(auth_mode="hmac", signing_key="old-key")

    with pytest.raises(RotationRefused, match=message):
        start_key_rotation(destination=destination, new_key=new_key)

    assert Destination.objects.get(pk=destination.pk).key_rotation_started_at is None


@pytest.mark.django_db
def test_a_second_start_conflicts_and_keeps_the_first_new_key():
    destination = DestinationFactory(auth_mode="hmac", signing_key="old-key")
    start_key_rotation(destination=destination, new_key="first")

    with pytest.raises(RotationConflict, match="already under way"):
        start_key_rotation(destination=destination, new_key="second")

    assert Destination.objects.get(pk=destination.pk).new_signing_key == "first"


@pytest.mark.django_db
def test_finishing_with_no_rotation_under_way_conflicts():
    destination = DestinationFactory(auth_mode="hmac", signing_key="old-key")

    with pytest.raises(RotationConflict, match="no key rotation is under way"):
        finish_key_rotation(destination=destination)

    assert Destination.objects.get(pk=destination.pk).signing_key == "old-key"


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_starts_cannot_both_succeed():
    # Given one HMAC destination and two workers starting a rotation at the same moment
    destination = DestinationFactory(auth_mode="hmac", signing_key="old-key")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def start(key: str) -> None:
        barrier.wait()
        try:
            start_key_rotation(destination=Destination.objects.get(pk=destination.pk), new_key=key)
            outcomes.append("started")
        except RotationConflict:
            outcomes.append("conflict")
        finally:
            connection.close()

    threads = [threading.Thread(target=start, args=(key,)) for key in ("key-a", "key-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    # Then exactly one started, and the stored key is the winner's
    assert sorted(outcomes) == ["conflict", "started"]
    assert Destination.objects.get(pk=destination.pk).new_signing_key in {"key-a", "key-b"}
