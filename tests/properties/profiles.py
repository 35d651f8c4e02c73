"""Hypothesis settings for the property tests, chosen by `HYPOTHESIS_PROFILE`.

- `ci` (the default, what `make test` runs): few examples, derandomized, so a
  run takes seconds and fails the same way twice;
- `large`: many random examples, for a search before a release
  (`make test PYTEST_ARGS="tests/properties" HYPOTHESIS_PROFILE=large`).

The profile is applied per test (`@PROPERTY_SETTINGS`) instead of loaded
globally, so other tests that use hypothesis keep their own settings.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Examples reuse the function-scoped `partner` and `db` fixtures on purpose:
# each example rolls its own writes back (`tests.properties.isolation`).
_SHARED = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
settings.register_profile("ci", max_examples=30, derandomize=True, **_SHARED)
settings.register_profile("large", max_examples=600, derandomize=False, print_blob=True, **_SHARED)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
PROPERTY_SETTINGS = settings.get_profile(PROFILE if PROFILE in ("ci", "large") else "ci")


def scaled(examples: int) -> settings:
    """`PROPERTY_SETTINGS` with `examples` examples in `ci` (10 × that in `large`), for costly properties."""
    factor = 10 if PROFILE == "large" else 1
    return settings(PROPERTY_SETTINGS, max_examples=examples * factor)
