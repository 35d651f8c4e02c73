"""The retry policy, without Celery or a network."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from delivery.sending.retry import should_retry


@dataclass(frozen=True)
class Result:
    is_success: bool


SUCCESS = Result(is_success=True)
FAILURE = Result(is_success=False)


def test_a_success_is_never_retried():
    assert not should_retry(attempt_number=1, max_retries=1, result=SUCCESS)


def test_a_first_failure_is_retried_once_by_default():
    assert should_retry(attempt_number=1, max_retries=1, result=FAILURE)


def test_the_retry_that_fails_is_the_last_attempt():
    assert not should_retry(attempt_number=2, max_retries=1, result=FAILURE)


def test_no_retry_is_made_when_max_retries_is_zero():
    assert not should_retry(attempt_number=1, max_retries=0, result=FAILURE)


@pytest.mark.parametrize("max_retries", [0, 1, 2, 5])
def test_a_failing_delivery_makes_max_retries_plus_one_attempts(max_retries):
    attempts = 1
    while should_retry(attempt_number=attempts, max_retries=max_retries, result=FAILURE):
        attempts += 1

    assert attempts == max_retries + 1


def test_an_attempt_beyond_the_allowance_is_not_retried():
    # A resumed delivery may have made more attempts than the destination now allows.
    assert not should_retry(attempt_number=4, max_retries=1, result=FAILURE)
